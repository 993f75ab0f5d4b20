package endpoints

import (
	"fmt"
	"strings"
	"testing"

	corev1 "skiff.dev/proto/api/core/v1"
)

func addr(ip string) *corev1.EndpointAddress {
	return &corev1.EndpointAddress{Ip: ip, TargetRef: &corev1.ObjectReference{Kind: "Pod", Name: "p" + ip, Uid: "uid-" + ip}}
}

func port(name string, n int32) *corev1.EndpointPort {
	return &corev1.EndpointPort{Name: name, Port: n, Protocol: "TCP"}
}

func subset(ready, notReady []string, ports ...*corev1.EndpointPort) *corev1.EndpointSubset {
	s := &corev1.EndpointSubset{Ports: ports}
	for _, ip := range ready {
		s.Addresses = append(s.Addresses, addr(ip))
	}
	for _, ip := range notReady {
		s.NotReadyAddresses = append(s.NotReadyAddresses, addr(ip))
	}
	return s
}

// show prints subsets as "{ready|notReady|ports}".
func show(ss []*corev1.EndpointSubset) string {
	var out []string
	for _, s := range ss {
		var r, n, p []string
		for _, a := range s.Addresses {
			r = append(r, a.GetIp())
		}
		for _, a := range s.NotReadyAddresses {
			n = append(n, a.GetIp())
		}
		for _, x := range s.Ports {
			p = append(p, fmt.Sprintf("%s:%d", x.GetName(), x.GetPort()))
		}
		out = append(out, "{"+strings.Join(r, ",")+"|"+strings.Join(n, ",")+"|"+strings.Join(p, ",")+"}")
	}
	return strings.Join(out, " ")
}

func TestRepackSubsets(t *testing.T) {
	tests := []struct {
		name string
		in   []*corev1.EndpointSubset
		want string
	}{{
		name: "nothing",
		want: "",
	}, {
		name: "one address per subset merges into one sorted subset",
		in: []*corev1.EndpointSubset{
			subset([]string{"10.0.0.2"}, nil, port("http", 80)),
			subset([]string{"10.0.0.1"}, nil, port("http", 80)),
			subset(nil, []string{"10.0.0.3"}, port("http", 80)),
		},
		want: "{10.0.0.1,10.0.0.2|10.0.0.3|http:80}",
	}, {
		name: "ports offered by the same addresses share a subset",
		in: []*corev1.EndpointSubset{
			subset([]string{"10.0.0.1"}, nil, port("http", 80)),
			subset([]string{"10.0.0.1"}, nil, port("https", 443)),
			subset([]string{"10.0.0.2"}, nil, port("http", 80)),
			subset([]string{"10.0.0.2"}, nil, port("https", 443)),
		},
		want: "{10.0.0.1,10.0.0.2||http:80,https:443}",
	}, {
		name: "different port sets make different subsets",
		in: []*corev1.EndpointSubset{
			subset([]string{"10.0.0.1"}, nil, port("http", 8080)),
			subset([]string{"10.0.0.2"}, nil, port("http", 9090)),
		},
		want: "{10.0.0.1||http:8080} {10.0.0.2||http:9090}",
	}, {
		name: "not ready on a port wins over ready",
		in: []*corev1.EndpointSubset{
			subset([]string{"10.0.0.1"}, nil, port("http", 80)),
			subset(nil, []string{"10.0.0.1"}, port("http", 80)),
		},
		want: "{|10.0.0.1|http:80}",
	}, {
		name: "duplicates collapse",
		in: []*corev1.EndpointSubset{
			subset([]string{"10.0.0.1", "10.0.0.1"}, nil, port("http", 80)),
		},
		want: "{10.0.0.1||http:80}",
	}, {
		name: "a headless Service's port-less addresses are kept",
		in: []*corev1.EndpointSubset{
			subset([]string{"10.0.0.2"}, nil),
			subset(nil, []string{"10.0.0.1"}),
		},
		want: "{10.0.0.2|10.0.0.1|}",
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := repackSubsets(tt.in)
			if show(got) != tt.want {
				t.Errorf("repack = %s, want %s", show(got), tt.want)
			}
			// Repacking is canonical: again gives the same.
			if again := repackSubsets(got); !subsetsEqual(again, got) {
				t.Errorf("repacking again gave %s", show(again))
			}
		})
	}
}

func ips(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s.%d.%d", prefix, i/250, i%250)
	}
	return out
}

func TestTruncate(t *testing.T) {
	tests := []struct {
		name                  string
		in                    []*corev1.EndpointSubset
		max                   int
		cut                   bool
		wantReady, wantNotRdy []int // per subset
	}{{
		name:      "under capacity: untouched",
		in:        []*corev1.EndpointSubset{subset(ips("10.0", 3), ips("10.1", 2), port("http", 80))},
		max:       5,
		wantReady: []int{3}, wantNotRdy: []int{2},
	}, {
		name:      "not ready addresses go first",
		in:        []*corev1.EndpointSubset{subset(ips("10.0", 3), ips("10.1", 4), port("http", 80))},
		max:       5,
		cut:       true,
		wantReady: []int{3}, wantNotRdy: []int{2},
	}, {
		name:      "too many ready: ready ones cut, every not ready one dropped",
		in:        []*corev1.EndpointSubset{subset(ips("10.0", 8), ips("10.1", 2), port("http", 80))},
		max:       5,
		cut:       true,
		wantReady: []int{5}, wantNotRdy: []int{0},
	}, {
		name: "shares are proportional, rounded up, the last takes the rest",
		in: []*corev1.EndpointSubset{
			subset(ips("10.0", 600), nil, port("a", 1)),
			subset(ips("10.1", 300), nil, port("b", 2)),
			subset(ips("10.2", 300), nil, port("c", 3)),
		},
		max:       1000,
		cut:       true,
		wantReady: []int{500, 250, 250}, wantNotRdy: []int{0, 0, 0},
	}, {
		name: "rounding up can starve the last subset",
		in: []*corev1.EndpointSubset{
			subset(ips("10.0", 5), nil, port("a", 1)),
			subset(ips("10.1", 5), nil, port("b", 2)),
			subset(ips("10.2", 5), nil, port("c", 3)),
		},
		max:       10,
		cut:       true,
		wantReady: []int{4, 4, 2}, wantNotRdy: []int{0, 0, 0},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cut := truncate(tt.in, tt.max)
			var ready, notReady []int
			for _, s := range tt.in {
				ready = append(ready, len(s.Addresses))
				notReady = append(notReady, len(s.NotReadyAddresses))
			}
			if cut != tt.cut || fmt.Sprint(ready) != fmt.Sprint(tt.wantReady) || fmt.Sprint(notReady) != fmt.Sprint(tt.wantNotRdy) {
				t.Errorf("truncate = %t, ready %v, not ready %v; want %t, %v, %v", cut, ready, notReady, tt.cut, tt.wantReady, tt.wantNotRdy)
			}
		})
	}
}

func TestSubsetsEqualIgnoresPodResourceVersion(t *testing.T) {
	a := []*corev1.EndpointSubset{subset([]string{"10.0.0.1"}, nil, port("http", 80))}
	b := []*corev1.EndpointSubset{subset([]string{"10.0.0.1"}, nil, port("http", 80))}
	b[0].Addresses[0].TargetRef.ResourceVersion = "42"
	if !subsetsEqual(a, b) {
		t.Error("subsets differing only in the pod's resourceVersion compare unequal")
	}
	b[0].Addresses[0].Hostname = "web-0"
	if subsetsEqual(a, b) {
		t.Error("subsets with different hostnames compare equal")
	}
}
