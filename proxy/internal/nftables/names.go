package nftables

import (
	"crypto/sha256"
	"encoding/base32"
	"fmt"
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
)

// Per-service object prefixes; everything with a "/" in its name belongs to
// one ServicePort.
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

func isServiceChain(name string) bool { return strings.Contains(name, "/") }

func isAffinitySet(name string) bool { return strings.HasPrefix(name, affinitySetPrefix) }
