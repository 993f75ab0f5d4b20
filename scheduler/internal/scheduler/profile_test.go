package scheduler

import (
	"strings"
	"testing"

	"skiff.dev/scheduler/internal/plugins/noderesources"
)

func names[T interface{ Name() string }](ps []T) string {
	var out []string
	for _, p := range ps {
		out = append(out, p.Name())
	}
	return strings.Join(out, ",")
}

func TestProfiles(t *testing.T) {
	def, err := newProfileFramework(Profile{SchedulerName: "default-scheduler"}, nil, nil, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := names(def.filter); got != "NodeUnschedulable,NodeName,TaintToleration,NodeAffinity,NodePorts,NodeResourcesFit,VolumeBinding,PodTopologySpread,InterPodAffinity" {
		t.Errorf("default filters: %s", got)
	}
	if def.weights["TaintToleration"] != 3 || def.weights["NodeAffinity"] != 2 || def.weights["NodeResourcesFit"] != 1 {
		t.Errorf("default weights: %v", def.weights)
	}
	p := Profile{SchedulerName: "bin-packer",
		Plugins: &Plugins{Score: PluginSet{
			Disabled: []PluginRef{{Name: "NodeResourcesBalancedAllocation"}},
			Enabled:  []PluginRef{{Name: "NodeResourcesFit", Weight: 5}},
		}, Filter: PluginSet{Disabled: []PluginRef{{Name: "TaintToleration"}}}},
		PluginConfig: []PluginConfig{{Name: "NodeResourcesFit", Args: map[string]any{"scoringStrategy": map[string]any{"type": "MostAllocated"}}}},
	}
	f, err := newProfileFramework(p, nil, nil, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(names(f.score), "BalancedAllocation") || strings.Contains(names(f.filter), "TaintToleration") || f.weights["NodeResourcesFit"] != 5 {
		t.Errorf("bin-packer: filters %s scores %s weights %v", names(f.filter), names(f.score), f.weights)
	}
	for _, pl := range f.filter {
		if fit, ok := pl.(*noderesources.Fit); ok && fit.Strategy != noderesources.MostAllocated {
			t.Errorf("strategy %s", fit.Strategy)
		}
	}
	for _, bad := range []Profile{
		{SchedulerName: "x", Plugins: &Plugins{Score: PluginSet{Enabled: []PluginRef{{Name: "Nope"}}}}},
		{SchedulerName: "x", PluginConfig: []PluginConfig{{Name: "NodeResourcesFit", Args: map[string]any{"scoringStrategy": map[string]any{"type": "Sideways"}}}}},
	} {
		if _, err := newProfileFramework(bad, nil, nil, 0, nil); err == nil {
			t.Errorf("accepted %+v", bad)
		}
	}
	if numFeasibleToFind(0, 50) != 50 || numFeasibleToFind(0, 5000) != 500 || numFeasibleToFind(30, 1000) != 300 || numFeasibleToFind(0, 200) != 100 {
		t.Errorf("adaptive percentage: %d %d %d %d", numFeasibleToFind(0, 50), numFeasibleToFind(0, 5000), numFeasibleToFind(30, 1000), numFeasibleToFind(0, 200))
	}
}
