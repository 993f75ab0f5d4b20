package nftables

import (
	"crypto/sha256"
	"encoding/base32"
	"fmt"
	"strconv"
	"strings"

	"sigs.k8s.io/knftables"

	"skiff.dev/proxy/internal/proxy"
)

// The table and its fixed objects, upstream's names.
const (
	// TableName is the table skiff-proxy owns in the ip and ip6 families:
	// not kube-proxy's, so the two never fight over one table.
	TableName = "skiff-proxy"

	filterPreroutingChain = "filter-prerouting"
	filterInputChain      = "filter-input"
	filterForwardChain    = "filter-forward"
	filterOutputChain     = "filter-output"
	natPreroutingChain    = "nat-prerouting"
	natOutputChain        = "nat-output"
	natPostroutingChain   = "nat-postrouting"

	servicesChain       = "services"
	serviceIPsMap       = "service-ips"
	serviceNodePortsMap = "service-nodeports"
	nodePortIPsSet      = "nodeport-ips"

	serviceEndpointsCheckChain  = "service-endpoints-check"
	nodePortEndpointsCheckChain = "nodeport-endpoints-check"
	noEndpointServicesMap       = "no-endpoint-services"
	noEndpointNodePortsMap      = "no-endpoint-nodeports"
	rejectChain                 = "reject-chain"

	markMasqChain     = "mark-for-masquerade"
	masqueradingChain = "masquerading"

	// generationSet holds one element, the number of the last successful
	// sync, so a periodic look tells whether someone replaced or flushed
	// the table since.
	generationSet = "sync-generation"

	// hairpinSet holds "ip . ip" for every endpoint that may be its own
	// client: a connection DNATed back to its source is masqueraded.
	hairpinSet = "hairpin-endpoints"
)

// fixedChains are the chains every table has; any other chain belongs to
// some Service or pool size and goes when nothing uses it.
var fixedChains = map[string]bool{
	filterPreroutingChain: true, filterInputChain: true, filterForwardChain: true, filterOutputChain: true,
	natPreroutingChain: true, natOutputChain: true, natPostroutingChain: true,
	servicesChain: true, serviceEndpointsCheckChain: true, nodePortEndpointsCheckChain: true,
	rejectChain: true, markMasqChain: true, masqueradingChain: true,
}

// fixedSets are the sets and maps every table has.
var fixedSets = map[string]bool{
	serviceIPsMap: true, serviceNodePortsMap: true, nodePortIPsSet: true, noEndpointServicesMap: true,
	noEndpointNodePortsMap: true, generationSet: true, hairpinSet: true,
}

// entryKind is how traffic reaches a Service: to one of its addresses
// (ClusterIP, external and load-balancer IPs: matched by address, protocol
// and port) or to a NodePort (protocol and port on any NodePort address).
type entryKind uint8

const (
	addrEntry entryKind = iota
	nodePortEntry
)

// poolRole is what a shared chain does before it picks an endpoint.
type poolRole uint8

const (
	// roleInternal: ClusterIP traffic; masquerade what comes from outside
	// the cluster (or all of it with --masquerade-all), then pick.
	roleInternal poolRole = iota
	// roleExternal: externalTrafficPolicy Cluster; masquerade, then pick.
	roleExternal
	// roleCluster: pick among all endpoints (eTP Local's short-circuit).
	roleCluster
	// roleLocal: pick among this node's endpoints, at localSlot and up.
	roleLocal
	// roleExternalLocal: externalTrafficPolicy Local; pod and node traffic
	// to cluster-N, the rest to local-L.
	roleExternalLocal
)

// localSlot is where an eTP=Local entry's node-local endpoints start in its
// endpoints map; below it are the cluster-wide ones its short-circuit uses.
const localSlot = 1 << 24

// sharedChain names a chain that every ServicePort with the same entry
// kind, protocol, role and number of endpoints uses: the endpoints
// themselves are map elements keyed by the packet's destination, so a chain
// per pool size replaces upstream's chain per Service and per endpoint.
type sharedChain struct {
	kind  entryKind
	proto string // tcp, udp or sctp
	role  poolRole
	n     int // endpoints to pick from (roleExternalLocal: cluster-wide)
	// nLocal: roleExternalLocal's node-local endpoints (0: none).
	nLocal int
}

func (c sharedChain) String() string {
	prefix := c.proto + "-"
	if c.kind == nodePortEntry {
		prefix = "nodeport-" + prefix
	}
	switch c.role {
	case roleInternal:
		return prefix + "internal-" + strconv.Itoa(c.n)
	case roleExternal:
		return prefix + "external-" + strconv.Itoa(c.n)
	case roleCluster:
		return prefix + "cluster-" + strconv.Itoa(c.n)
	case roleLocal:
		return prefix + "local-" + strconv.Itoa(c.n)
	default:
		return prefix + "external-local-" + strconv.Itoa(c.n) + "-" + strconv.Itoa(c.nLocal)
	}
}

// endpointsMap is the map a pool size's chains pick from: "address . port
// . slot : endpoint address . port" (NodePorts: "port . slot : …"), one per
// protocol so that keys leave it out: nft parses every field of every
// element, and a full sync writes one element per endpoint.
//
// Not one per size and endpoint port either, which would spare a field of
// the value: the kernel finds a set by name in a list, and checks each new
// element against every rule using its map, so an element costs in
// proportion to the table's sets and its map's rules; both stay at the few
// pool sizes in use.
func endpointsMap(id mapID) string {
	prefix := id.proto + "-endpoints-"
	if id.kind == nodePortEntry {
		prefix = "nodeport-" + prefix
	}
	return prefix + strconv.Itoa(id.n)
}

// Prefixes of the chains and sets of a ServicePort with affinity (see
// affinityServicePort); their names hold a "/".
const (
	clusterChainPrefix  = "service-"
	localChainPrefix    = "local-"
	externalChainPrefix = "external-"
	endpointChainPrefix = "endpoint-"
	affinitySetPrefix   = "affinity-"

	prefixMax = 16
	baseMax   = knftables.NameLengthMax - prefixMax
)

// hashAndTruncate puts a hash of name in front of it, so names that differ
// in one digit still look different, and keeps it within nft's limit.
func hashAndTruncate(name string) string {
	h := sha256.Sum256([]byte(name))
	name = base32.StdEncoding.EncodeToString(h[:])[:8] + "-" + name
	if len(name) > baseMax {
		name = name[:baseMax-3] + "..."
	}
	return name
}

// portChainBase is "HASH-namespace/name/protocol/port".
func portChainBase(n proxy.ServicePortName) string {
	return hashAndTruncate(fmt.Sprintf("%s/%s/%s/%s", n.Namespace, n.Name, strings.ToLower(n.Protocol), n.Port))
}

// endpointChainBase is "HASH-namespace/name/protocol/port__ip/port"; an
// IPv6 address has its colons turned into dots, which nft names accept.
func endpointChainBase(n proxy.ServicePortName, ep *proxy.Endpoint) string {
	ip := strings.ReplaceAll(ep.IP.String(), ":", ".")
	return hashAndTruncate(fmt.Sprintf("%s/%s/%s/%s__%s/%d", n.Namespace, n.Name, strings.ToLower(n.Protocol), n.Port, ip, ep.Port))
}
