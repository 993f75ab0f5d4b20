package app

import (
	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/knftables"

	"skiff.dev/proxy/internal/conntrack"
	"skiff.dev/proxy/internal/ipvs"
	"skiff.dev/proxy/internal/metrics"
	"skiff.dev/proxy/internal/nftables"
)

// What programs embedding one family's proxier directly need (the e2e
// benchmark drives syncs itself, without informers), as etcd's embed
// package gives etcd. The logic stays in internal/.
type (
	// NFTablesProxier programs one family's table; feed it with its On*
	// methods and call SyncNow.
	NFTablesProxier = nftables.Proxier
	// NFTablesConfig builds an NFTablesProxier.
	NFTablesConfig = nftables.Config
	// NodePortAddresses selects the NodePort addresses of an NFTablesConfig.
	NodePortAddresses = nftables.NodePortAddresses
	// ParallelNFT lets a full sync's transactions run at the same time.
	ParallelNFT = nftables.ParallelNFT
	// CoalescingNFT writes a transaction's elements as few nft commands,
	// as skiff-proxy's own interfaces do.
	CoalescingNFT = nftables.Coalescing
	// Conntrack deletes stale UDP entries (the entries ConntrackFilter
	// selects); ConntrackNetlink is the real one.
	Conntrack        = conntrack.Interface
	ConntrackFilter  = conntrack.Filter
	ConntrackNetlink = conntrack.Netlink
	// Metrics are a proxier's metrics (NFTablesConfig.Metrics), made by
	// NewMetrics on a registry or none.
	Metrics = metrics.Metrics
	// IPVSHandle is the part of moby/ipvs a Config's IPVSHandle needs.
	IPVSHandle = ipvs.Handle
)

// NewParallelNFT spreads transactions over several interfaces of one table.
func NewParallelNFT(nfts ...knftables.Interface) *ParallelNFT {
	return nftables.NewParallelNFT(nfts...)
}

// NewMetrics makes the proxy's metrics, registered on reg unless nil.
func NewMetrics(reg prometheus.Registerer) *Metrics { return metrics.New(reg) }

// NewNFTablesProxier builds one family's nftables proxier.
func NewNFTablesProxier(cfg NFTablesConfig) (*NFTablesProxier, error) { return nftables.New(cfg) }
