package scheduler

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"skiff.dev/client"
	"skiff.dev/client/informers"
	"skiff.dev/scheduler/internal/framework"
	"skiff.dev/scheduler/internal/plugins/defaultbinder"
	"skiff.dev/scheduler/internal/plugins/imagelocality"
	"skiff.dev/scheduler/internal/plugins/interpodaffinity"
	"skiff.dev/scheduler/internal/plugins/nodeaffinity"
	"skiff.dev/scheduler/internal/plugins/nodename"
	"skiff.dev/scheduler/internal/plugins/nodeports"
	"skiff.dev/scheduler/internal/plugins/noderesources"
	"skiff.dev/scheduler/internal/plugins/nodeunschedulable"
	"skiff.dev/scheduler/internal/plugins/podtopologyspread"
	"skiff.dev/scheduler/internal/plugins/queuesort"
	"skiff.dev/scheduler/internal/plugins/tainttoleration"
	"skiff.dev/scheduler/internal/plugins/volumebinding"
)

// PluginSet enables and disables plugins at an extension point.
type PluginSet struct {
	Enabled  []PluginRef `json:"enabled,omitempty"`
	Disabled []PluginRef `json:"disabled,omitempty"`
}

// PluginRef names a plugin (and its score weight).
type PluginRef struct {
	Name   string `json:"name"`
	Weight int64  `json:"weight,omitempty"`
}

// Plugins are a profile's plugin sets (upstream's names).
type Plugins struct {
	MultiPoint PluginSet `json:"multiPoint,omitempty"`
	Filter     PluginSet `json:"filter,omitempty"`
	Score      PluginSet `json:"score,omitempty"`
}

// Profile is one scheduler profile of the configuration file.
type Profile struct {
	SchedulerName string         `json:"schedulerName"`
	Plugins       *Plugins       `json:"plugins,omitempty"`
	PluginConfig  []PluginConfig `json:"pluginConfig,omitempty"`
	// PercentageOfNodesToScore overrides the configuration's for this profile.
	PercentageOfNodesToScore *int32 `json:"percentageOfNodesToScore,omitempty"`
}

// PluginConfig carries one plugin's args.
type PluginConfig struct {
	Name string         `json:"name"`
	Args map[string]any `json:"args"`
}

// defaultScoreWeights are upstream's default plugin weights.
var defaultScoreWeights = map[string]int64{
	noderesources.FitName:      1,
	noderesources.BalancedName: 1,
	imagelocality.Name:         1,
	nodeaffinity.Name:          2,
	tainttoleration.Name:       3,
	podtopologyspread.Name:     2,
	interpodaffinity.Name:      2,
}

// framework is a profile's instantiated plugins, per extension point.
type profileFramework struct {
	name       string
	percentage int32
	queueSort  framework.QueueSortPlugin
	preFilter  []framework.PreFilterPlugin
	filter     []framework.FilterPlugin
	postFilter []framework.PostFilterPlugin
	preScore   []framework.PreScorePlugin
	score      []framework.ScorePlugin
	weights    map[string]int64
	reserve    []framework.ReservePlugin
	permit     []framework.PermitPlugin
	preBind    []framework.PreBindPlugin
	bind       []framework.BindPlugin
	postBind   []framework.PostBindPlugin
	extension  *prometheus.HistogramVec
}

// registry builds every plugin this scheduler knows.
func registry(c *client.Client, inf *informers.Factory, args map[string]map[string]any) (map[string]framework.Plugin, error) {
	fit := noderesources.NewFit()
	if a := args[noderesources.FitName]; a != nil {
		if s, ok := a["scoringStrategy"].(map[string]any); ok {
			if t, ok := s["type"].(string); ok {
				switch noderesources.Strategy(t) {
				case noderesources.LeastAllocated, noderesources.MostAllocated, noderesources.RequestedToCapacityRatio:
					fit.Strategy = noderesources.Strategy(t)
				default:
					return nil, fmt.Errorf("pluginConfig %s: scoringStrategy.type %q is not LeastAllocated, MostAllocated or RequestedToCapacityRatio", noderesources.FitName, t)
				}
			}
			if rs, ok := s["resources"].([]any); ok {
				fit.Resources = nil
				for _, r := range rs {
					m, _ := r.(map[string]any)
					name, _ := m["name"].(string)
					w, _ := m["weight"].(float64)
					if name == "" || w <= 0 {
						return nil, fmt.Errorf("pluginConfig %s: resources need a name and a positive weight", noderesources.FitName)
					}
					fit.Resources = append(fit.Resources, noderesources.ResourceWeight{Name: name, Weight: int64(w)})
				}
			}
			if rc, ok := s["requestedToCapacityRatio"].(map[string]any); ok {
				for _, p := range asList(rc["shape"]) {
					m, _ := p.(map[string]any)
					u, _ := m["utilization"].(float64)
					sc, _ := m["score"].(float64)
					fit.Shape = append(fit.Shape, noderesources.ShapePoint{Utilization: int64(u), Score: int64(sc)})
				}
			}
		}
	}
	plugins := []framework.Plugin{
		queuesort.Plugin{}, nodeunschedulable.Plugin{}, nodename.Plugin{}, tainttoleration.Plugin{},
		nodeaffinity.Plugin{}, nodeports.Plugin{}, fit, podtopologyspread.Plugin{}, interpodaffinity.Plugin{},
		noderesources.NewBalanced(), &imagelocality.Plugin{}, volumebinding.New(c, inf),
		defaultbinder.Plugin{Client: c},
	}
	out := map[string]framework.Plugin{}
	for _, p := range plugins {
		out[p.Name()] = p
	}
	return out, nil
}

func asList(v any) []any { l, _ := v.([]any); return l }

// defaultPlugins is upstream's default MultiPoint order.
var defaultPlugins = []string{
	queuesort.Name, nodeunschedulable.Name, nodename.Name, tainttoleration.Name, nodeaffinity.Name,
	nodeports.Name, noderesources.FitName, volumebinding.Name, podtopologyspread.Name, interpodaffinity.Name,
	noderesources.BalancedName, imagelocality.Name, defaultbinder.Name,
}

func newProfileFramework(p Profile, c *client.Client, inf *informers.Factory, percentage int32, ext *prometheus.HistogramVec) (*profileFramework, error) {
	args := map[string]map[string]any{}
	for _, pc := range p.PluginConfig {
		args[pc.Name] = pc.Args
	}
	reg, err := registry(c, inf, args)
	if err != nil {
		return nil, err
	}
	names := append([]string(nil), defaultPlugins...)
	weights := map[string]int64{}
	for k, v := range defaultScoreWeights {
		weights[k] = v
	}
	disabledFilter, disabledScore := map[string]bool{}, map[string]bool{}
	if pl := p.Plugins; pl != nil {
		disable := func(set PluginSet, into map[string]bool) {
			for _, d := range set.Disabled {
				into[d.Name] = true
			}
		}
		disable(pl.MultiPoint, disabledFilter)
		disable(pl.MultiPoint, disabledScore)
		disable(pl.Filter, disabledFilter)
		disable(pl.Score, disabledScore)
		for _, set := range []PluginSet{pl.MultiPoint, pl.Filter, pl.Score} {
			for _, e := range set.Enabled {
				if _, ok := reg[e.Name]; !ok {
					return nil, fmt.Errorf("profile %q: plugin %q is not registered", p.SchedulerName, e.Name)
				}
				if e.Weight > 0 {
					weights[e.Name] = e.Weight
				}
				found := false
				for _, n := range names {
					found = found || n == e.Name
				}
				if !found {
					names = append(names, e.Name)
				}
			}
		}
		for _, set := range []PluginSet{pl.MultiPoint, pl.Filter, pl.Score} {
			for _, d := range set.Disabled {
				if d.Name != "*" {
					if _, ok := reg[d.Name]; !ok {
						return nil, fmt.Errorf("profile %q: cannot disable unknown plugin %q", p.SchedulerName, d.Name)
					}
				}
			}
		}
	}
	if p.PercentageOfNodesToScore != nil {
		percentage = *p.PercentageOfNodesToScore
	}
	f := &profileFramework{name: p.SchedulerName, percentage: percentage, weights: weights, extension: ext}
	off := func(set map[string]bool, n string) bool { return set[n] || set["*"] }
	for _, n := range names {
		pl := reg[n]
		if x, ok := pl.(framework.QueueSortPlugin); ok && f.queueSort == nil {
			f.queueSort = x
		}
		if x, ok := pl.(framework.PreFilterPlugin); ok && !off(disabledFilter, n) {
			f.preFilter = append(f.preFilter, x)
		}
		if x, ok := pl.(framework.FilterPlugin); ok && !off(disabledFilter, n) {
			f.filter = append(f.filter, x)
		}
		if x, ok := pl.(framework.PostFilterPlugin); ok {
			f.postFilter = append(f.postFilter, x)
		}
		if x, ok := pl.(framework.PreScorePlugin); ok && !off(disabledScore, n) {
			f.preScore = append(f.preScore, x)
		}
		if x, ok := pl.(framework.ScorePlugin); ok && !off(disabledScore, n) && weights[n] > 0 {
			f.score = append(f.score, x)
		}
		if x, ok := pl.(framework.ReservePlugin); ok {
			f.reserve = append(f.reserve, x)
		}
		if x, ok := pl.(framework.PermitPlugin); ok {
			f.permit = append(f.permit, x)
		}
		if x, ok := pl.(framework.PreBindPlugin); ok {
			f.preBind = append(f.preBind, x)
		}
		if x, ok := pl.(framework.BindPlugin); ok {
			f.bind = append(f.bind, x)
		}
		if x, ok := pl.(framework.PostBindPlugin); ok {
			f.postBind = append(f.postBind, x)
		}
	}
	if f.queueSort == nil || len(f.bind) == 0 {
		return nil, fmt.Errorf("profile %q: needs a queue sort and a bind plugin", p.SchedulerName)
	}
	return f, nil
}

func (f *profileFramework) observe(point string, start time.Time, st *framework.Status) {
	if f.extension == nil {
		return
	}
	status := "Success"
	if !st.IsSuccess() {
		status = map[framework.Code]string{framework.Error: "Error", framework.Unschedulable: "Unschedulable",
			framework.UnschedulableAndUnresolvable: "UnschedulableAndUnresolvable", framework.Wait: "Wait", framework.Skip: "Skip"}[st.Code]
	}
	f.extension.WithLabelValues(point, status, f.name).Observe(time.Since(start).Seconds())
}

// runFilters checks one node with every filter; the first rejection wins.
func (f *profileFramework) runFilters(ctx context.Context, state *framework.CycleState, pod *framework.PodInfo, node *framework.NodeInfo) *framework.Status {
	for _, pl := range f.filter {
		if st := pl.Filter(ctx, state, pod, node); !st.IsSuccess() {
			st.Plugin = pl.Name()
			return st
		}
	}
	return nil
}

// findFeasible filters nodes in parallel, stopping once enough feasible
// nodes are found (upstream's adaptive percentageOfNodesToScore), starting
// where the previous cycle stopped so every node gets its turn.
func (f *profileFramework) findFeasible(ctx context.Context, state *framework.CycleState, pod *framework.PodInfo, nodes []*framework.NodeInfo, start int, workers int, nominated func(string) []*framework.PodInfo) ([]*framework.NodeInfo, *framework.Diagnosis, int) {
	want := numFeasibleToFind(f.percentage, len(nodes))
	d := &framework.Diagnosis{NodeToStatus: map[string]*framework.Status{}}
	n := len(nodes)
	if n == 0 {
		return nil, d, start
	}
	feasible := make([]*framework.NodeInfo, 0, min(want, n))
	var mu sync.Mutex
	processed := 0
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	next := 0
	var wg sync.WaitGroup
	chunk := max(1, min(64, n/(workers*4)+1))
	var nmu sync.Mutex
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				nmu.Lock()
				from := next
				next += chunk
				nmu.Unlock()
				if from >= n {
					return
				}
				for i := from; i < min(from+chunk, n); i++ {
					ni := nodes[(start+i)%n]
					st := f.runFilters(ctx, state, pod, withNominated(ni, nominated))
					mu.Lock()
					processed++
					if st.IsSuccess() {
						if len(feasible) < want {
							feasible = append(feasible, ni)
							if len(feasible) == want {
								cancel()
							}
						}
					} else {
						d.NodeToStatus[ni.Name()] = st
					}
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	return feasible, d, (start + processed) % n
}

// withNominated is ni with the pods nominated to it added, as upstream
// filters twice when nominated pods exist (we filter once, the stricter way).
func withNominated(ni *framework.NodeInfo, nominated func(string) []*framework.PodInfo) *framework.NodeInfo {
	if nominated == nil {
		return ni
	}
	ps := nominated(ni.Name())
	if len(ps) == 0 {
		return ni
	}
	c := ni.Clone()
	for _, p := range ps {
		c.AddPod(p)
	}
	return c
}

// numFeasibleToFind is upstream's adaptive percentage: all nodes below 100,
// else 50% minus 1% per 125 nodes, at least 5% and 100 nodes.
func numFeasibleToFind(percentage int32, n int) int {
	if n < 100 || percentage >= 100 {
		return n
	}
	p := percentage
	if p <= 0 {
		p = int32(50 - n/125)
		if p < 5 {
			p = 5
		}
	}
	k := n * int(p) / 100
	return max(k, 100)
}

// scoreNodes runs score plugins and returns weighted totals.
func (f *profileFramework) scoreNodes(ctx context.Context, state *framework.CycleState, pod *framework.PodInfo, nodes []*framework.NodeInfo) []framework.NodeScore {
	totals := make([]framework.NodeScore, len(nodes))
	for i, n := range nodes {
		totals[i].Name = n.Name()
	}
	if len(nodes) == 1 {
		return totals
	}
	for _, pl := range f.preScore {
		pl.PreScore(ctx, state, pod, nodes)
	}
	for _, pl := range f.score {
		scores := make([]framework.NodeScore, len(nodes))
		for i, n := range nodes {
			s, _ := pl.Score(ctx, state, pod, n)
			scores[i] = framework.NodeScore{Name: n.Name(), Score: s}
		}
		if norm, ok := pl.(framework.ScoreNormalizer); ok {
			norm.NormalizeScore(ctx, state, pod, scores)
		}
		w := f.weights[pl.Name()]
		for i := range scores {
			totals[i].Score += scores[i].Score * w
		}
	}
	return totals
}

// selectHost picks the highest score, breaking ties by reservoir sampling as
// upstream does so equal nodes share the load.
func selectHost(scores []framework.NodeScore, rnd func(int) int) string {
	best, count := "", 0
	var top int64 = -1
	for _, s := range scores {
		switch {
		case s.Score > top:
			top, best, count = s.Score, s.Name, 1
		case s.Score == top:
			count++
			if rnd(count) == 0 {
				best = s.Name
			}
		}
	}
	return best
}
