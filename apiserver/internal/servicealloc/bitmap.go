package servicealloc

import "math/bits"

// bitmap is a set of offsets below n, with its size kept.
type bitmap struct {
	words []uint64
	n     uint64
	count uint64
}

func newBitmap(n uint64) *bitmap { return &bitmap{words: make([]uint64, (n+63)/64), n: n} }

func (b *bitmap) has(i uint64) bool { return i < b.n && b.words[i/64]&(1<<(i%64)) != 0 }

func (b *bitmap) set(i uint64) {
	if i >= b.n || b.has(i) {
		return
	}
	b.words[i/64] |= 1 << (i % 64)
	b.count++
}

func (b *bitmap) clear(i uint64) {
	if !b.has(i) {
		return
	}
	b.words[i/64] &^= 1 << (i % 64)
	b.count--
}

// free finds an offset in [lo, hi] that is neither set nor refused by skip,
// scanning from start and wrapping around, so callers starting at random
// points spread over the range.
func (b *bitmap) free(lo, hi, start uint64, skip func(uint64) bool) (uint64, bool) {
	if lo > hi {
		return 0, false
	}
	if start < lo || start > hi {
		start = lo
	}
	try := func(from, to uint64) (uint64, bool) {
		for i := from; i <= to; {
			w := b.words[i/64] | (1<<(i%64) - 1) // offsets below i in this word count as set
			if w == ^uint64(0) {
				i = (i/64 + 1) * 64
				continue
			}
			j := (i/64)*64 + uint64(bits.TrailingZeros64(^w))
			if j > to {
				return 0, false
			}
			if skip == nil || !skip(j) {
				return j, true
			}
			i = j + 1
		}
		return 0, false
	}
	if i, ok := try(start, hi); ok {
		return i, true
	}
	if start > lo {
		return try(lo, start-1)
	}
	return 0, false
}
