package nodeports

import (
	"testing"

	"skiff.dev/scheduler/internal/framework"
)

func TestConflicts(t *testing.T) {
	used := map[framework.HostPort]bool{{IP: "10.0.0.1", Protocol: "TCP", Port: 80}: true, {IP: "0.0.0.0", Protocol: "UDP", Port: 53}: true}
	cases := []struct {
		want framework.HostPort
		ok   bool
	}{
		{framework.HostPort{IP: "10.0.0.1", Protocol: "TCP", Port: 80}, true},
		{framework.HostPort{IP: "10.0.0.2", Protocol: "TCP", Port: 80}, false},
		{framework.HostPort{Protocol: "TCP", Port: 80}, true}, // wildcard overlaps every address
		{framework.HostPort{IP: "10.0.0.9", Protocol: "UDP", Port: 53}, true},
		{framework.HostPort{IP: "10.0.0.1", Protocol: "UDP", Port: 80}, false},
	}
	for _, tc := range cases {
		if got := Conflicts(used, tc.want); got != tc.ok {
			t.Errorf("%+v: %v, want %v", tc.want, got, tc.ok)
		}
	}
}
