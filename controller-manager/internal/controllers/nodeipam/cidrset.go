package nodeipam

import (
	"errors"
	"fmt"
	"math/big"
	"net/netip"
	"sync"
)

// errFull is upstream's CIDRSet error when every subnet is taken.
var errFull = errors.New("CIDR allocation failed; there are no remaining CIDRs left to allocate in the accepted range")

// cidrSet hands out the subnets of one cluster CIDR, as upstream's cidrset:
// a bitmap of /mask subnets and a rotating start so a released subnet is
// not handed out again at once (a node that was just deleted may still have
// routes pointing at it).
type cidrSet struct {
	mu      sync.Mutex
	cluster netip.Prefix
	mask    int
	max     int
	used    big.Int
	next    int
	inUse   int
}

// maxSubnetBits is upstream's limit: at most 2^16 node subnets per range.
const maxSubnetBits = 16

func newCIDRSet(cluster netip.Prefix, mask int) (*cidrSet, error) {
	cluster = cluster.Masked()
	if mask < cluster.Bits() || mask > cluster.Addr().BitLen() {
		return nil, fmt.Errorf("node CIDR mask size /%d must lie between the cluster CIDR's /%d and /%d", mask, cluster.Bits(), cluster.Addr().BitLen())
	}
	if mask-cluster.Bits() > maxSubnetBits {
		return nil, fmt.Errorf("node CIDR mask size /%d is more than %d bits longer than the cluster CIDR's /%d", mask, maxSubnetBits, cluster.Bits())
	}
	return &cidrSet{cluster: cluster, mask: mask, max: 1 << (mask - cluster.Bits())}, nil
}

// subnet is the i-th subnet.
func (s *cidrSet) subnet(i int) netip.Prefix {
	a := s.cluster.Addr().As16()
	bits := s.cluster.Addr().BitLen()
	off := 16 - bits/8
	// Add i << (bits-mask) to the address.
	n := new(big.Int).SetBytes(a[off:])
	n.Add(n, new(big.Int).Lsh(big.NewInt(int64(i)), uint(bits-s.mask)))
	b := n.FillBytes(make([]byte, bits/8))
	copy(a[off:], b)
	addr := netip.AddrFrom16(a)
	if bits == 32 {
		addr = addr.Unmap()
	}
	return netip.PrefixFrom(addr, s.mask)
}

// index is p's position, or an error when p is not one of the set's subnets.
func (s *cidrSet) index(p netip.Prefix) (int, error) {
	if p.Bits() != s.mask || !s.cluster.Contains(p.Addr()) || p.Masked() != p {
		return 0, fmt.Errorf("%s is not a /%d subnet of %s", p, s.mask, s.cluster)
	}
	a := p.Addr().AsSlice()
	c := s.cluster.Addr().AsSlice()
	diff := new(big.Int).Sub(new(big.Int).SetBytes(a), new(big.Int).SetBytes(c))
	return int(diff.Rsh(diff, uint(p.Addr().BitLen()-s.mask)).Int64()), nil
}

func (s *cidrSet) allocate() (netip.Prefix, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for k := 0; k < s.max; k++ {
		i := (s.next + k) % s.max
		if s.used.Bit(i) == 0 {
			s.used.SetBit(&s.used, i, 1)
			s.next = (i + 1) % s.max
			s.inUse++
			return s.subnet(i), nil
		}
	}
	return netip.Prefix{}, errFull
}

// occupy marks p taken; it reports whether it was free.
func (s *cidrSet) occupy(p netip.Prefix) (bool, error) {
	i, err := s.index(p)
	if err != nil {
		return false, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.used.Bit(i) == 1 {
		return false, nil
	}
	s.used.SetBit(&s.used, i, 1)
	s.inUse++
	return true, nil
}

func (s *cidrSet) release(p netip.Prefix) error {
	i, err := s.index(p)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.used.Bit(i) == 1 {
		s.used.SetBit(&s.used, i, 0)
		s.inUse--
	}
	return nil
}

func (s *cidrSet) usage() float64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return float64(s.inUse) / float64(s.max)
}
