package servicealloc

import (
	"net/netip"
	"strings"
	"testing"
)

func TestParseIPRanges(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want string // the ranges, or the error
	}{
		{"10.96.0.0/12", "10.96.0.0/12"},
		{"10.96.0.5/12", "10.96.0.0/12"},
		{"10.96.0.0/12,fd00::/108", "10.96.0.0/12 fd00::/108"},
		{"fd00::/108,10.96.0.0/12", "fd00::/108 10.96.0.0/12"},
		{"10.0.0.0/30", "10.0.0.0/30"},
		{"10.96.0.0/11", "[0]: 10.96.0.0/11 is too large; for 32-bit addresses, the mask must be >= 12"},
		{"fd00::/64", "[0]: fd00::/64 is too large; for 128-bit addresses, the mask must be >= 108"},
		{"10.0.0.0/31", "[0]: 10.0.0.0/31 is too small: it must hold the kubernetes Service's address and at least one more"},
		{"fd00::/127", "[0]: fd00::/127 is too small: it must hold the kubernetes Service's address and at least one more"},
		{"10.96.0.0", `[0]: "10.96.0.0" is not a CIDR`},
		{"10.96.0.0/12,10.200.0.0/16", "10.96.0.0/12 and 10.200.0.0/16 must be of different IP families"},
		{"10.96.0.0/12,fd00::/108,fd01::/108", "want one CIDR, or two of different IP families, got 3"},
	} {
		r, err := ParseIPRanges(strings.Split(tc.in, ","))
		got := ""
		if err != nil {
			got = err.Error()
		} else {
			var s []string
			for _, x := range r {
				s = append(s, x.String())
			}
			got = strings.Join(s, " ")
		}
		if got != tc.want {
			t.Errorf("%s:\n got %s\nwant %s", tc.in, got, tc.want)
		}
	}
}

func TestIPRangeOffsets(t *testing.T) {
	r, _ := ParseIPRange("10.96.0.0/12")
	if ip := r.KubernetesServiceIP(); ip != netip.MustParseAddr("10.96.0.1") {
		t.Fatalf("kubernetes IP %s", ip)
	}
	for ip, want := range map[string]bool{"10.96.0.0": false, "10.96.0.1": true, "10.111.255.254": true, "10.111.255.255": false, "10.112.0.0": false, "::ffff:10.96.0.9": true} {
		if _, ok := r.offset(netip.MustParseAddr(ip)); ok != want {
			t.Errorf("%s usable = %v", ip, ok)
		}
	}
	if a := r.addr(r.last()); a != netip.MustParseAddr("10.111.255.254") {
		t.Fatalf("last %s", a)
	}
	six, _ := ParseIPRange("fd00::/126")
	// IPv6 has no broadcast: its last address is usable, as upstream.
	if off, ok := six.offset(netip.MustParseAddr("fd00::3")); !ok || off != 3 {
		t.Fatalf("fd00::3: %d %v", off, ok)
	}
	if six.usable() != 3 || r.usable() != 1<<20-2 {
		t.Fatalf("usable %d %d", six.usable(), r.usable())
	}
}

func TestParsePortRange(t *testing.T) {
	for in, want := range map[string]string{
		"30000-32767": "30000-32767",
		"30000+2767":  "30000-32767",
		"31000-31000": "31000-31000",
		"0-100":       `"0-100" is not within 1-65535`,
		"65000-70000": "",
		"abc":         "",
		"32767-30000": "",
	} {
		p, err := ParsePortRange(in)
		switch {
		case want == "" && err == nil:
			t.Errorf("%s: no error, got %s", in, p)
		case want != "" && err == nil && p.String() != want:
			t.Errorf("%s = %s, want %s", in, p, want)
		case want != "" && err != nil && err.Error() != want:
			t.Errorf("%s: %v, want %s", in, err, want)
		}
	}
}

func TestBitmapFreeWrapsAndSkips(t *testing.T) {
	b := newBitmap(200)
	for i := uint64(0); i < 200; i++ {
		if i != 5 && i != 150 {
			b.set(i)
		}
	}
	if b.count != 198 {
		t.Fatalf("count %d", b.count)
	}
	if i, ok := b.free(0, 199, 100, nil); !ok || i != 150 {
		t.Fatalf("from 100: %d %v", i, ok)
	}
	if i, ok := b.free(0, 199, 151, nil); !ok || i != 5 {
		t.Fatalf("from 151 wraps: %d %v", i, ok)
	}
	if i, ok := b.free(0, 199, 0, func(i uint64) bool { return i == 5 }); !ok || i != 150 {
		t.Fatalf("skipping 5: %d %v", i, ok)
	}
	if _, ok := b.free(6, 149, 10, nil); ok {
		t.Fatal("found a free offset in a full window")
	}
	b.clear(5) // not set: no change
	b.clear(7)
	b.clear(7)
	if b.count != 197 {
		t.Fatalf("count after a double clear %d", b.count)
	}
}
