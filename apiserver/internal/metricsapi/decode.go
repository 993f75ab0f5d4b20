package metricsapi

import (
	"bufio"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"time"
)

// The kubelet's /metrics/resource series metrics-server reads (upstream's
// pkg/kubelet/metrics/collectors/resource_metrics.go).
const (
	nodeCPUMetric         = "node_cpu_usage_seconds_total"
	nodeMemoryMetric      = "node_memory_working_set_bytes"
	containerCPUMetric    = "container_cpu_usage_seconds_total"
	containerMemoryMetric = "container_memory_working_set_bytes"
	containerStartMetric  = "container_start_time_seconds"
)

// Sample is one reading of a node or a container: cumulative CPU and the
// memory working set, and when the kubelet measured them.
type Sample struct {
	// Time is the CPU reading's timestamp (the memory one where the CPU
	// reading carries none): rates are taken over it.
	Time time.Time
	// CPU is the cumulative CPU time in core-nanoseconds.
	CPU uint64
	// Memory is the working set in bytes.
	Memory uint64
	// StartTime is a container's start, zero when unknown.
	StartTime time.Time

	hasCPU, hasMemory bool
}

// PodRef names a pod.
type PodRef struct{ Namespace, Name string }

// Batch is one scrape of one kubelet.
type Batch struct {
	// Node is the node's own sample, nil when the kubelet reported none.
	Node *Sample
	// Pods are the containers' samples by pod and container name; only
	// containers with both a CPU and a memory reading are kept.
	Pods map[PodRef]map[string]Sample
}

// Decode reads the Prometheus text exposition of /metrics/resource.
// Samples without a timestamp are dated at; other series are ignored.
func Decode(r io.Reader, at time.Time) (*Batch, error) {
	node := &Sample{}
	pods := map[PodRef]map[string]*Sample{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for line := 1; sc.Scan(); line++ {
		text := strings.TrimSpace(sc.Text())
		if text == "" || text[0] == '#' {
			continue
		}
		name, labels, value, ts, err := parseLine(text)
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", line, err)
		}
		if ts.IsZero() {
			ts = at
		}
		switch name {
		case nodeCPUMetric:
			node.CPU, node.Time, node.hasCPU = cpuNanos(value), ts, true
		case nodeMemoryMetric:
			node.Memory, node.hasMemory = uint64(math.Max(value, 0)), true
			if !node.hasCPU {
				node.Time = ts
			}
		case containerCPUMetric, containerMemoryMetric, containerStartMetric:
			ref := PodRef{Namespace: labels["namespace"], Name: labels["pod"]}
			ctr := labels["container"]
			if ref.Name == "" || ctr == "" {
				continue
			}
			if pods[ref] == nil {
				pods[ref] = map[string]*Sample{}
			}
			s := pods[ref][ctr]
			if s == nil {
				s = &Sample{}
				pods[ref][ctr] = s
			}
			switch name {
			case containerCPUMetric:
				s.CPU, s.Time, s.hasCPU = cpuNanos(value), ts, true
			case containerMemoryMetric:
				s.Memory, s.hasMemory = uint64(math.Max(value, 0)), true
				if !s.hasCPU {
					s.Time = ts
				}
			case containerStartMetric:
				sec, frac := math.Modf(value)
				s.StartTime = time.Unix(int64(sec), int64(frac*1e9))
			}
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	b := &Batch{Pods: map[PodRef]map[string]Sample{}}
	if node.hasCPU && node.hasMemory {
		b.Node = node
	}
	for ref, ctrs := range pods {
		for name, s := range ctrs {
			if !s.hasCPU || !s.hasMemory {
				continue // metrics-server drops a container missing either figure
			}
			if b.Pods[ref] == nil {
				b.Pods[ref] = map[string]Sample{}
			}
			b.Pods[ref][name] = *s
		}
	}
	return b, nil
}

func cpuNanos(seconds float64) uint64 {
	if seconds <= 0 || math.IsNaN(seconds) {
		return 0
	}
	return uint64(seconds * 1e9)
}

// parseLine splits `name{k="v",...} value [timestamp_ms]`.
func parseLine(s string) (name string, labels map[string]string, value float64, ts time.Time, err error) {
	i := strings.IndexAny(s, "{ \t")
	if i < 0 {
		return "", nil, 0, time.Time{}, fmt.Errorf("no value in %q", s)
	}
	name, rest := s[:i], s[i:]
	labels = map[string]string{}
	if rest[0] == '{' {
		rest = rest[1:]
		for {
			rest = strings.TrimLeft(rest, " \t,")
			if strings.HasPrefix(rest, "}") {
				rest = rest[1:]
				break
			}
			eq := strings.IndexByte(rest, '=')
			if eq < 0 || len(rest) < eq+2 || rest[eq+1] != '"' {
				return "", nil, 0, time.Time{}, fmt.Errorf("bad labels in %q", s)
			}
			key := strings.TrimSpace(rest[:eq])
			rest = rest[eq+2:]
			var v strings.Builder
			closed := false
			for j := 0; j < len(rest); j++ {
				c := rest[j]
				if c == '\\' && j+1 < len(rest) {
					j++
					switch rest[j] {
					case 'n':
						v.WriteByte('\n')
					default:
						v.WriteByte(rest[j])
					}
					continue
				}
				if c == '"' {
					rest, closed = rest[j+1:], true
					break
				}
				v.WriteByte(c)
			}
			if !closed {
				return "", nil, 0, time.Time{}, fmt.Errorf("unterminated label value in %q", s)
			}
			labels[key] = v.String()
		}
	}
	f := strings.Fields(rest)
	if len(f) < 1 || len(f) > 2 {
		return "", nil, 0, time.Time{}, fmt.Errorf("bad sample %q", s)
	}
	if value, err = strconv.ParseFloat(f[0], 64); err != nil {
		return "", nil, 0, time.Time{}, fmt.Errorf("bad value in %q: %w", s, err)
	}
	if len(f) == 2 {
		ms, err := strconv.ParseInt(f[1], 10, 64)
		if err != nil {
			return "", nil, 0, time.Time{}, fmt.Errorf("bad timestamp in %q: %w", s, err)
		}
		ts = time.UnixMilli(ms)
	}
	return name, labels, value, ts, nil
}
