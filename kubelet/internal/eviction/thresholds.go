package eviction

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/api/resource"
)

// Signal is something the eviction manager measures on the node
// (upstream's evictionapi.Signal).
type Signal string

// The signals the kubelet measures. Upstream also has
// allocatableMemory.available (with --enforce-node-allocatable=pods, which
// Skiff does not enforce) and containerfs.* (always derived from nodefs or
// imagefs, never set by hand).
const (
	SignalMemoryAvailable   Signal = "memory.available"
	SignalNodeFsAvailable   Signal = "nodefs.available"
	SignalNodeFsInodesFree  Signal = "nodefs.inodesFree"
	SignalImageFsAvailable  Signal = "imagefs.available"
	SignalImageFsInodesFree Signal = "imagefs.inodesFree"
	SignalPIDAvailable      Signal = "pid.available"
)

// signals in the order thresholds are reclaimed: memory first, as
// upstream's byEvictionPriority; the rest in a fixed order where upstream's
// sort leaves them as they come.
var signals = []Signal{SignalMemoryAvailable, SignalNodeFsAvailable, SignalNodeFsInodesFree,
	SignalImageFsAvailable, SignalImageFsInodesFree, SignalPIDAvailable}

// The resources a signal starves, as the eviction message names them.
const (
	resourceMemory           = "memory"
	resourceEphemeralStorage = "ephemeral-storage"
	resourceInodes           = "inodes"
	resourcePIDs             = "pids"
)

var signalToResource = map[Signal]string{
	SignalMemoryAvailable:   resourceMemory,
	SignalNodeFsAvailable:   resourceEphemeralStorage,
	SignalNodeFsInodesFree:  resourceInodes,
	SignalImageFsAvailable:  resourceEphemeralStorage,
	SignalImageFsInodesFree: resourceInodes,
	SignalPIDAvailable:      resourcePIDs,
}

// The node conditions the signals drive.
const (
	ConditionMemoryPressure = "MemoryPressure"
	ConditionDiskPressure   = "DiskPressure"
	ConditionPIDPressure    = "PIDPressure"
)

var signalToCondition = map[Signal]string{
	SignalMemoryAvailable:   ConditionMemoryPressure,
	SignalNodeFsAvailable:   ConditionDiskPressure,
	SignalNodeFsInodesFree:  ConditionDiskPressure,
	SignalImageFsAvailable:  ConditionDiskPressure,
	SignalImageFsInodesFree: ConditionDiskPressure,
	SignalPIDAvailable:      ConditionPIDPressure,
}

// DefaultHard is upstream's --eviction-hard on Linux.
const DefaultHard = "imagefs.available<15%,memory.available<100Mi,nodefs.available<10%,nodefs.inodesFree<5%"

// DefaultPressureTransitionPeriod is upstream's
// --eviction-pressure-transition-period.
const DefaultPressureTransitionPeriod = 5 * time.Minute

// DefaultMonitoringInterval is how often the signals are measured
// (upstream's evictionMonitoringPeriod, cadvisor's housekeeping).
const DefaultMonitoringInterval = 10 * time.Second

// Value is a threshold's amount: a quantity, or else a fraction of the
// signal's capacity.
type Value struct {
	Quantity *resource.Quantity
	// Percentage is a fraction (0.1 for "10%"), used when Quantity is nil.
	// Upstream's is a float32, whose 10% of 100Gi is 160 bytes too many.
	Percentage float64
}

// quantity is v against capacity (upstream's GetThresholdQuantity).
func (v Value) quantity(capacity int64) *resource.Quantity {
	if v.Quantity != nil {
		q := v.Quantity.DeepCopy()
		return &q
	}
	return resource.NewQuantity(int64(float64(capacity)*v.Percentage), resource.BinarySI)
}

func (v Value) String() string {
	if v.Quantity != nil {
		return v.Quantity.String()
	}
	// As float32: 0.15*100 is 15.000000000000002 in float64.
	return strconv.FormatFloat(float64(float32(v.Percentage*100)), 'f', -1, 32) + "%"
}

// Threshold is met when its signal's available amount is below Value
// (upstream has no other operator). A GracePeriod of zero makes it hard:
// it evicts at once; a soft one only once met for the whole period.
type Threshold struct {
	Signal      Signal
	Value       Value
	GracePeriod time.Duration
	// MinReclaim, once the threshold is met, keeps it met until this much
	// more than Value is available again.
	MinReclaim *Value
}

func (t Threshold) hard() bool { return t.GracePeriod == 0 }

// key tells thresholds apart: one hard and one soft per signal at most.
func (t Threshold) key() string {
	if t.hard() {
		return string(t.Signal) + "/hard"
	}
	return string(t.Signal) + "/soft"
}

func (t Threshold) String() string {
	s := string(t.Signal) + "<" + t.Value.String()
	if !t.hard() {
		s += " for " + t.GracePeriod.String()
	}
	return s
}

// unsupported is upstream's unsupportedEvictionSignal message.
func unsupported(s string) error { return fmt.Errorf("unsupported eviction signal %s", s) }

func validSignal(s string) bool {
	_, ok := signalToResource[Signal(s)]
	return ok
}

// pairs splits "a<b,c<d" (sep "<") or "a=b" lists as upstream's
// LangleSeparatedMapStringString and MapStringString flags do: empty
// items are skipped, a later key replaces an earlier one.
func pairs(s, sep string) (map[string]string, error) {
	out := map[string]string{}
	for item := range strings.SplitSeq(s, ",") {
		if strings.TrimSpace(item) == "" {
			continue
		}
		k, v, ok := strings.Cut(item, sep)
		if !ok {
			return nil, fmt.Errorf("malformed pair %q, expect string%sstring", item, sep)
		}
		out[strings.TrimSpace(k)] = strings.TrimSpace(v)
	}
	return out, nil
}

// ParseStatements reads --eviction-hard or --eviction-soft
// ("memory.available<100Mi,nodefs.available<10%") as upstream's
// parseThresholdStatements: a positive quantity or a percentage from 0 to
// 100, where 0% and 100% mean no threshold.
func ParseStatements(s string) (map[Signal]Value, error) {
	kv, err := pairs(s, "<")
	if err != nil {
		return nil, err
	}
	out := map[Signal]Value{}
	for _, k := range sortedKeys(kv) {
		v := kv[k]
		if !validSignal(k) {
			return nil, unsupported(k)
		}
		if strings.HasSuffix(v, "%") {
			if v == "0%" || v == "100%" {
				continue
			}
			p, err := parsePercentage(v)
			if err != nil {
				return nil, fmt.Errorf("eviction threshold %s: %q is not a percentage", k, v)
			}
			if p < 0 {
				return nil, fmt.Errorf("eviction percentage threshold %s must be >= 0%%: %s", k, v)
			}
			if p > 1 {
				return nil, fmt.Errorf("eviction percentage threshold %s must be <= 100%%: %s", k, v)
			}
			out[Signal(k)] = Value{Percentage: p}
			continue
		}
		q, err := resource.ParseQuantity(v)
		if err != nil {
			return nil, fmt.Errorf("eviction threshold %s: %q: %w", k, v, err)
		}
		if q.Sign() <= 0 {
			return nil, fmt.Errorf("eviction threshold %s must be positive: %s", k, q.String())
		}
		out[Signal(k)] = Value{Quantity: &q}
	}
	return out, nil
}

func parsePercentage(v string) (float64, error) {
	f, err := strconv.ParseFloat(strings.TrimSuffix(v, "%"), 64)
	if err != nil {
		return 0, err
	}
	return f / 100, nil
}

// ParseGracePeriods reads --eviction-soft-grace-period
// ("memory.available=1m30s").
func ParseGracePeriods(s string) (map[Signal]time.Duration, error) {
	kv, err := pairs(s, "=")
	if err != nil {
		return nil, err
	}
	out := map[Signal]time.Duration{}
	for _, k := range sortedKeys(kv) {
		if !validSignal(k) {
			return nil, unsupported(k)
		}
		d, err := time.ParseDuration(kv[k])
		if err != nil {
			return nil, fmt.Errorf("eviction grace period %s: %w", k, err)
		}
		if d < 0 {
			return nil, fmt.Errorf("invalid eviction grace period specified: %s, must be a positive value", kv[k])
		}
		out[Signal(k)] = d
	}
	return out, nil
}

// ParseMinimumReclaims reads --eviction-minimum-reclaim
// ("memory.available=0Mi,nodefs.available=500Mi").
func ParseMinimumReclaims(s string) (map[Signal]Value, error) {
	kv, err := pairs(s, "=")
	if err != nil {
		return nil, err
	}
	out := map[Signal]Value{}
	for _, k := range sortedKeys(kv) {
		v := kv[k]
		if !validSignal(k) {
			return nil, unsupported(k)
		}
		if strings.HasSuffix(v, "%") {
			p, err := parsePercentage(v)
			if err != nil {
				return nil, fmt.Errorf("eviction minimum reclaim %s: %q is not a percentage", k, v)
			}
			if p <= 0 {
				return nil, fmt.Errorf("eviction percentage minimum reclaim %s must be positive: %s", k, v)
			}
			out[Signal(k)] = Value{Percentage: p}
			continue
		}
		q, err := resource.ParseQuantity(v)
		if err != nil {
			return nil, fmt.Errorf("eviction minimum reclaim %s: %q: %w", k, v, err)
		}
		if q.Sign() < 0 {
			return nil, fmt.Errorf("negative eviction minimum reclaim specified for %s", k)
		}
		out[Signal(k)] = Value{Quantity: &q}
	}
	return out, nil
}

// Thresholds combines the parsed flags as upstream's ParseThresholdConfig:
// every soft threshold needs its grace period; minimum reclaims apply to
// the hard and soft thresholds of their signal.
func Thresholds(hard, soft map[Signal]Value, grace map[Signal]time.Duration, minReclaim map[Signal]Value) ([]Threshold, error) {
	var out []Threshold
	for _, s := range signals {
		if v, ok := hard[s]; ok {
			out = append(out, Threshold{Signal: s, Value: v})
		}
	}
	for _, s := range signals {
		v, ok := soft[s]
		if !ok {
			continue
		}
		g, ok := grace[s]
		if !ok {
			return nil, fmt.Errorf("grace period must be specified for the soft eviction threshold %s", s)
		}
		out = append(out, Threshold{Signal: s, Value: v, GracePeriod: g})
	}
	for i := range out {
		if r, ok := minReclaim[out[i].Signal]; ok {
			out[i].MinReclaim = &r
		}
	}
	return out, nil
}

// HardReserved is what the hard memory.available and nodefs.available
// thresholds take from the node's allocatable memory and
// ephemeral-storage (upstream's hardEvictionReservation).
func HardReserved(thresholds []Threshold, capacity map[string]resource.Quantity) map[string]resource.Quantity {
	out := map[string]resource.Quantity{}
	for _, t := range thresholds {
		if !t.hard() {
			continue
		}
		var name string
		switch t.Signal {
		case SignalMemoryAvailable:
			name = "memory"
		case SignalNodeFsAvailable:
			name = "ephemeral-storage"
		default:
			continue
		}
		c := capacity[name]
		out[name] = *t.Value.quantity(c.Value())
	}
	return out
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
