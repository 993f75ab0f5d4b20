package eviction

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/resource"
)

func TestParseStatements(t *testing.T) {
	for _, tc := range []struct {
		in, want, err string
	}{
		{in: DefaultHard, want: "imagefs.available<15% memory.available<100Mi nodefs.available<10% nodefs.inodesFree<5%"},
		{in: "", want: ""},
		{in: " memory.available < 1Gi , ", want: "memory.available<1Gi"},
		{in: "pid.available<1000,imagefs.inodesFree<2.5%", want: "imagefs.inodesFree<2.5% pid.available<1k"},
		// Upstream ignores 0% and 100%: no threshold, not an error.
		{in: "nodefs.available<0%,imagefs.available<100%", want: ""},
		{in: "nodefs.available<99.99%", want: "nodefs.available<99.99%"},
		{in: "memory.available=100Mi", err: `malformed pair "memory.available=100Mi", expect string<string`},
		{in: "memory.available>100Mi", err: "malformed pair"},
		{in: "memory.free<100Mi", err: "unsupported eviction signal memory.free"},
		{in: "allocatableMemory.available<100Mi", err: "unsupported eviction signal"},
		{in: "memory.available<lots", err: `eviction threshold memory.available: "lots"`},
		{in: "memory.available<0", err: "eviction threshold memory.available must be positive: 0"},
		{in: "memory.available<-1Gi", err: "must be positive"},
		{in: "nodefs.available<-5%", err: "eviction percentage threshold nodefs.available must be >= 0%: -5%"},
		{in: "nodefs.available<150%", err: "eviction percentage threshold nodefs.available must be <= 100%: 150%"},
		{in: "nodefs.available<ten%", err: `"ten%" is not a percentage`},
	} {
		got, err := ParseStatements(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("ParseStatements(%q) = %v, %v; want error %q", tc.in, got, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("ParseStatements(%q): %v", tc.in, err)
			continue
		}
		var parts []string
		for _, s := range signalsOf(got) {
			parts = append(parts, string(s)+"<"+got[s].String())
		}
		if s := strings.Join(parts, " "); s != tc.want {
			t.Errorf("ParseStatements(%q) = %s, want %s", tc.in, s, tc.want)
		}
	}
}

// signalsOf lists m's signals by name.
func signalsOf[V any](m map[Signal]V) []Signal {
	var out []Signal
	for _, s := range []Signal{SignalImageFsAvailable, SignalImageFsInodesFree, SignalMemoryAvailable,
		SignalNodeFsAvailable, SignalNodeFsInodesFree, SignalPIDAvailable} {
		if _, ok := m[s]; ok {
			out = append(out, s)
		}
	}
	return out
}

func TestParseGracePeriodsAndMinimumReclaims(t *testing.T) {
	g, err := ParseGracePeriods("memory.available=1m30s,nodefs.available=0s")
	if err != nil || g[SignalMemoryAvailable] != 90*time.Second || len(g) != 2 {
		t.Errorf("ParseGracePeriods = %v, %v", g, err)
	}
	for in, want := range map[string]string{
		"memory.available":           "malformed pair \"memory.available\", expect string=string",
		"memory.available=soon":      "eviction grace period memory.available",
		"memory.available=-1s":       "invalid eviction grace period specified: -1s, must be a positive value",
		"memory.availabel=1m":        "unsupported eviction signal memory.availabel",
		"memory.available<1m":        "malformed pair",
		"memory.available=1m,pid=1s": "unsupported eviction signal pid",
	} {
		if _, err := ParseGracePeriods(in); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseGracePeriods(%q) = %v, want %q", in, err, want)
		}
	}
	r, err := ParseMinimumReclaims("memory.available=0Mi,nodefs.available=500Mi,imagefs.available=2%")
	if err != nil || r[SignalNodeFsAvailable].String() != "500Mi" || r[SignalImageFsAvailable].String() != "2%" || r[SignalMemoryAvailable].String() != "0" {
		t.Errorf("ParseMinimumReclaims = %v, %v", r, err)
	}
	for in, want := range map[string]string{
		"nodefs.available=0%":    "eviction percentage minimum reclaim nodefs.available must be positive: 0%",
		"nodefs.available=-1Gi":  "negative eviction minimum reclaim specified for nodefs.available",
		"nodefs.available=a lot": "eviction minimum reclaim nodefs.available",
		"disk=1Gi":               "unsupported eviction signal disk",
	} {
		if _, err := ParseMinimumReclaims(in); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseMinimumReclaims(%q) = %v, want %q", in, err, want)
		}
	}
}

func TestThresholds(t *testing.T) {
	hard, _ := ParseStatements("memory.available<100Mi,nodefs.available<10%")
	soft, _ := ParseStatements("memory.available<1Gi")
	grace, _ := ParseGracePeriods("memory.available=1m,pid.available=1m")
	reclaim, _ := ParseMinimumReclaims("memory.available=500Mi")
	th, err := Thresholds(hard, soft, grace, reclaim)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, x := range th {
		s := x.String()
		if x.MinReclaim != nil {
			s += " reclaim " + x.MinReclaim.String()
		}
		got = append(got, s)
	}
	want := "[memory.available<100Mi reclaim 500Mi nodefs.available<10% memory.available<1Gi for 1m0s reclaim 500Mi]"
	if fmt.Sprint(got) != want {
		t.Errorf("Thresholds = %v, want %s", got, want)
	}
	if _, err := Thresholds(nil, soft, nil, nil); err == nil || err.Error() != "grace period must be specified for the soft eviction threshold memory.available" {
		t.Errorf("a soft threshold without grace period: %v", err)
	}
}

// Comparing a signal with a threshold: strictly below is met, a
// percentage is of the signal's capacity, the minimum reclaim raises the
// bar for a threshold already met.
func TestThresholdsMet(t *testing.T) {
	gi := int64(1 << 30)
	hard, _ := ParseStatements("memory.available<1Gi,nodefs.available<10%")
	reclaim, _ := ParseMinimumReclaims("memory.available=512Mi,nodefs.available=5%")
	th, _ := Thresholds(hard, nil, nil, reclaim)
	for _, tc := range []struct {
		name          string
		memory, disk  int64 // available; memory of 8Gi, disk of 100Gi
		minReclaim    bool
		wantMemory    bool
		wantNodefs    bool
		missingNodefs bool
	}{
		{name: "plenty", memory: 4 * gi, disk: 50 * gi},
		{name: "just below", memory: gi - 1, disk: 10*gi - 1, wantMemory: true, wantNodefs: true},
		{name: "exactly at the threshold is fine", memory: gi, disk: 10 * gi},
		{name: "percentage of capacity", memory: 4 * gi, disk: 9 * gi, wantNodefs: true},
		{name: "above, but not by the minimum reclaim", memory: gi + gi/4, disk: 12 * gi, minReclaim: true, wantMemory: true, wantNodefs: true},
		{name: "above by the minimum reclaim", memory: gi + gi/2, disk: 15 * gi, minReclaim: true},
		{name: "no observation meets nothing", memory: 4 * gi, missingNodefs: true},
	} {
		obs := Observations{SignalMemoryAvailable: {Available: tc.memory, Capacity: 8 * gi}}
		if !tc.missingNodefs {
			obs[SignalNodeFsAvailable] = Observation{Available: tc.disk, Capacity: 100 * gi}
		}
		met := thresholdsMet(th, obs, tc.minReclaim, discard)
		var gotMemory, gotNodefs bool
		for _, m := range met {
			gotMemory = gotMemory || m.Signal == SignalMemoryAvailable
			gotNodefs = gotNodefs || m.Signal == SignalNodeFsAvailable
		}
		if gotMemory != tc.wantMemory || gotNodefs != tc.wantNodefs {
			t.Errorf("%s: memory met %v (want %v), nodefs met %v (want %v)", tc.name, gotMemory, tc.wantMemory, gotNodefs, tc.wantNodefs)
		}
	}
}

func TestHardReserved(t *testing.T) {
	hard, _ := ParseStatements(DefaultHard)
	soft, _ := ParseStatements("memory.available<2Gi")
	grace, _ := ParseGracePeriods("memory.available=1m")
	th, _ := Thresholds(hard, soft, grace, nil)
	r := HardReserved(th, map[string]resource.Quantity{"memory": resource.MustParse("8Gi"), "ephemeral-storage": resource.MustParse("100Gi")})
	mem, es := r["memory"], r["ephemeral-storage"]
	if len(r) != 2 || mem.String() != "100Mi" || es.String() != "10Gi" {
		t.Errorf("HardReserved = %v, want memory 100Mi (the hard one, not the soft) and ephemeral-storage 10Gi", r)
	}
}
