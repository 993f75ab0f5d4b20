package nftables

import (
	"context"

	"sigs.k8s.io/knftables"
)

// ParallelNFT is one table's knftables.Interface over several of them, so
// that transactions can run at the same time: knftables runs one nft at a
// time per Interface, and a full sync of many Services spends most of its
// time in nft's parser, which a second process runs on another core. The
// kernel still commits one transaction after the other.
type ParallelNFT struct {
	knftables.Interface
	free chan knftables.Interface
}

// NewParallelNFT spreads Run over nfts (all for the same family and table);
// everything else goes to the first.
func NewParallelNFT(nfts ...knftables.Interface) *ParallelNFT {
	p := &ParallelNFT{Interface: nfts[0], free: make(chan knftables.Interface, len(nfts))}
	for _, n := range nfts {
		p.free <- n
	}
	return p
}

// Run runs tx on whichever interface is free.
func (p *ParallelNFT) Run(ctx context.Context, tx *knftables.Transaction) error {
	var n knftables.Interface
	select {
	case n = <-p.free:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { p.free <- n }()
	return n.Run(ctx, tx)
}
