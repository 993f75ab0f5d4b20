package cmd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"sync"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/api/resource"

	"skiff.dev/client"
	"skiff.dev/ctl/internal/printers"
	corev1 "skiff.dev/proto/api/core/v1"
)

// `top` as kubectl's, reading what metrics-server would serve straight from
// the kubelets' /stats/summary (through the apiserver's node proxy): a
// container's CPU is its usageNanoCores, its memory its workingSetBytes;
// a node's the same figures of the node.

const (
	sortByCPU    = "cpu"
	sortByMemory = "memory"
	// metricsCreationDelay is kubectl's: a pod older than this without
	// metrics is a problem, not a wait.
	metricsCreationDelay = 2 * time.Minute
	// maxSummaryRequests bounds the kubelets asked at once.
	maxSummaryRequests = 16
)

var errMetricsNotAvailable = errors.New("metrics not available yet")

func newTop(o *Options) *cobra.Command {
	c := &cobra.Command{
		Use:   "top",
		Short: "Display resource (CPU/memory) usage",
		Long: "Display resource (CPU/memory) usage.\n\nThe top command allows you to see the resource consumption for nodes or pods,\n" +
			"read from the kubelets' summaries.",
		RunE: func(cmd *cobra.Command, args []string) error { return cmd.Help() },
	}
	c.AddCommand(newTopNode(o), newTopPod(o))
	return c
}

type topNodeFlags struct {
	selector     string
	sortBy       string
	noHeaders    bool
	showCapacity bool
}

func newTopNode(o *Options) *cobra.Command {
	var f topNodeFlags
	c := &cobra.Command{
		Use:     "node [NAME | -l label]",
		Aliases: []string{"nodes", "no"},
		Short:   "Display resource (CPU/memory) usage of nodes",
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.runTopNode(cmd.Context(), f, args)
		},
	}
	fl := c.Flags()
	fl.StringVarP(&f.selector, "selector", "l", "", "Selector (label query) to filter on, supports '=', '==', and '!='.(e.g. -l key1=value1,key2=value2). Matching objects must satisfy all of the specified label constraints.")
	fl.StringVar(&f.sortBy, "sort-by", "", "If non-empty, sort nodes list using specified field. The field can be either 'cpu' or 'memory'.")
	fl.BoolVar(&f.noHeaders, "no-headers", false, "If present, print output without headers")
	fl.BoolVar(&f.showCapacity, "show-capacity", false, "Print node resources based on Capacity instead of Allocatable(default) of the nodes.")
	return c
}

type topPodFlags struct {
	selector      string
	fieldSelector string
	sortBy        string
	allNamespaces bool
	containers    bool
	noHeaders     bool
}

func newTopPod(o *Options) *cobra.Command {
	var f topPodFlags
	c := &cobra.Command{
		Use:     "pod [NAME | -l label]",
		Aliases: []string{"pods", "po"},
		Short:   "Display resource (CPU/memory) usage of pods",
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.runTopPod(cmd.Context(), f, args)
		},
	}
	fl := c.Flags()
	fl.StringVarP(&f.selector, "selector", "l", "", "Selector (label query) to filter on, supports '=', '==', and '!='.(e.g. -l key1=value1,key2=value2). Matching objects must satisfy all of the specified label constraints.")
	fl.StringVar(&f.fieldSelector, "field-selector", "", "Selector (field query) to filter on, supports '=', '==', and '!='.(e.g. --field-selector key1=value1,key2=value2). The server only supports a limited number of field queries per type.")
	fl.StringVar(&f.sortBy, "sort-by", "", "If non-empty, sort pods list using specified field. The field can be either 'cpu' or 'memory'.")
	fl.BoolVar(&f.containers, "containers", false, "If present, print usage of containers within a pod.")
	fl.BoolVarP(&f.allNamespaces, "all-namespaces", "A", false, "If present, list the requested object(s) across all namespaces. Namespace in current context is ignored even if specified with --namespace.")
	fl.BoolVar(&f.noHeaders, "no-headers", false, "If present, print output without headers.")
	return c
}

func validSortBy(s string) error {
	if s != "" && s != sortByCPU && s != sortByMemory {
		return errors.New("--sort-by accepts only cpu or memory")
	}
	return nil
}

// usage is what metrics-server reports of a node or container: CPU in
// nanocores, memory in bytes.
type usage struct {
	nanoCores uint64
	bytes     uint64
}

func (u *usage) add(v usage) { u.nanoCores += v.nanoCores; u.bytes += v.bytes }

// milliCPU is the CPU as kubectl prints it: the quantity's MilliValue,
// which rounds up.
func (u usage) milliCPU() int64 {
	return int64((u.nanoCores + 999_999) / 1_000_000)
}

// summary is what `top` reads of the kubelet's Summary API.
type summary struct {
	Node struct {
		NodeName string         `json:"nodeName"`
		CPU      *summaryCPU    `json:"cpu"`
		Memory   *summaryMemory `json:"memory"`
	} `json:"node"`
	Pods []struct {
		PodRef struct {
			Name      string `json:"name"`
			Namespace string `json:"namespace"`
		} `json:"podRef"`
		Containers []struct {
			Name   string         `json:"name"`
			CPU    *summaryCPU    `json:"cpu"`
			Memory *summaryMemory `json:"memory"`
		} `json:"containers"`
	} `json:"pods"`
}

type summaryCPU struct {
	UsageNanoCores *uint64 `json:"usageNanoCores"`
}

type summaryMemory struct {
	WorkingSetBytes *uint64 `json:"workingSetBytes"`
}

func usageOf(cpu *summaryCPU, mem *summaryMemory) (usage, bool) {
	if cpu == nil || cpu.UsageNanoCores == nil || mem == nil || mem.WorkingSetBytes == nil {
		return usage{}, false
	}
	return usage{nanoCores: *cpu.UsageNanoCores, bytes: *mem.WorkingSetBytes}, true
}

// summaries reads the nodes' summaries at once (a few at a time). A node
// whose kubelet does not answer has no metrics, as metrics-server leaves it
// out; its error is kept to explain an empty result.
func summaries(ctx context.Context, api *client.Client, nodes []string) (map[string]*summary, error) {
	var (
		mu       sync.Mutex
		wg       sync.WaitGroup
		firstErr error
		sem      = make(chan struct{}, maxSummaryRequests)
	)
	out := map[string]*summary{}
	for _, n := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			b, err := api.NodeStatsSummary(ctx, n, true)
			var s summary
			if err == nil {
				if jerr := json.Unmarshal(b, &s); jerr != nil {
					err = fmt.Errorf("node %s: decoding its summary: %w", n, jerr)
				}
			}
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				if firstErr == nil {
					firstErr = err
				}
				return
			}
			out[n] = &s
		}()
	}
	wg.Wait()
	return out, firstErr
}

type nodeMetrics struct {
	name string
	usage
}

func (o *Options) runTopNode(ctx context.Context, f topNodeFlags, args []string) error {
	if err := validSortBy(f.sortBy); err != nil {
		return err
	}
	switch {
	case len(args) > 1:
		return errors.New("node [NAME | -l label]")
	case len(args) == 1 && f.selector != "":
		return errors.New("only one of NAME or selector can be provided")
	}
	api, err := o.client(ctx)
	if err != nil {
		return err
	}
	nodesAPI := client.For[*corev1.Node](api, "")
	var nodes []*corev1.Node
	if len(args) == 1 {
		n, err := nodesAPI.Get(ctx, args[0])
		if err != nil {
			return o.printError(err)
		}
		nodes = []*corev1.Node{n}
	} else {
		l, err := nodesAPI.List(ctx, client.ListOptions{LabelSelector: f.selector})
		if err != nil {
			return o.printError(err)
		}
		nodes = l.Items
	}
	names := make([]string, 0, len(nodes))
	for _, n := range nodes {
		names = append(names, n.GetMetadata().GetName())
	}
	sums, sumErr := summaries(ctx, api, names)
	var metrics []nodeMetrics
	for _, n := range names {
		if s := sums[n]; s != nil {
			if u, ok := usageOf(s.Node.CPU, s.Node.Memory); ok {
				metrics = append(metrics, nodeMetrics{name: n, usage: u})
			}
		}
	}
	if len(metrics) == 0 {
		if sumErr != nil && len(sums) == 0 {
			return o.printError(sumErr)
		}
		return errMetricsNotAvailable
	}
	available := map[string]map[string]*resource.Quantity{}
	for _, n := range nodes {
		list := n.GetStatus().GetAllocatable()
		if f.showCapacity {
			list = n.GetStatus().GetCapacity()
		}
		q := map[string]*resource.Quantity{}
		for _, r := range []string{"cpu", "memory"} {
			if v, ok := list[r]; ok {
				if p, err := resource.ParseQuantity(v.GetString_()); err == nil {
					q[r] = &p
				}
			}
		}
		available[n.GetMetadata().GetName()] = q
	}
	sort.SliceStable(metrics, func(i, j int) bool {
		a, b := metrics[i], metrics[j]
		switch f.sortBy {
		case sortByCPU:
			return a.milliCPU() > b.milliCPU()
		case sortByMemory:
			return a.bytes > b.bytes
		}
		return a.name < b.name
	})
	w := printers.NewTabWriter(o.streams.Out)
	defer w.Flush()
	if !f.noHeaders {
		fmt.Fprint(w, "NAME\tCPU(cores)\tCPU(%)\tMEMORY(bytes)\tMEMORY(%)\t\n")
	}
	for _, m := range metrics {
		avail := available[m.name]
		fmt.Fprintf(w, "%s\t%dm\t", m.name, m.milliCPU())
		if a := avail["cpu"]; a != nil {
			fmt.Fprintf(w, "%s\t", percent(m.milliCPU(), a.MilliValue()))
		}
		fmt.Fprintf(w, "%dMi\t", m.bytes/(1<<20))
		if a := avail["memory"]; a != nil {
			fmt.Fprintf(w, "%s\t", percent(int64(m.bytes)*1000, a.MilliValue()))
		}
		fmt.Fprint(w, "\n")
		delete(available, m.name)
	}
	// Nodes without metrics last, as kubectl prints them.
	missing := make([]string, 0, len(available))
	for n := range available {
		missing = append(missing, n)
	}
	sort.Strings(missing)
	for _, n := range missing {
		fmt.Fprintf(w, "%s\t<unknown>\t<unknown>\t<unknown>\t<unknown>\t\n", n)
	}
	return nil
}

// percent is kubectl's: the used share truncated to a whole percent.
func percent(usedMilli, availMilli int64) string {
	frac := 0.0
	if availMilli != 0 {
		frac = float64(usedMilli) / float64(availMilli) * 100
	}
	return fmt.Sprintf("%d%%", int64(frac))
}

type containerMetrics struct {
	name string
	usage
}

type podMetrics struct {
	namespace, name string
	containers      []containerMetrics
	total           usage
}

func (o *Options) runTopPod(ctx context.Context, f topPodFlags, args []string) error {
	if err := validSortBy(f.sortBy); err != nil {
		return err
	}
	switch {
	case len(args) > 1:
		return errors.New("pod [NAME | -l label]")
	case len(args) == 1 && (f.selector != "" || f.fieldSelector != ""):
		return errors.New("only one of NAME or selector can be provided")
	}
	api, err := o.client(ctx)
	if err != nil {
		return err
	}
	ns := o.namespace()
	listNS := ns
	if f.allNamespaces {
		listNS = ""
	}
	var pods []*corev1.Pod
	if len(args) == 1 {
		p, err := client.For[*corev1.Pod](api, ns).Get(ctx, args[0])
		if err != nil {
			return o.printError(err)
		}
		pods = []*corev1.Pod{p}
	} else {
		l, err := client.For[*corev1.Pod](api, listNS).List(ctx, client.ListOptions{LabelSelector: f.selector, FieldSelector: f.fieldSelector})
		if err != nil {
			return o.printError(err)
		}
		pods = l.Items
	}
	wanted := map[[2]string]bool{}
	nodeSet := map[string]bool{}
	for _, p := range pods {
		wanted[[2]string{p.GetMetadata().GetNamespace(), p.GetMetadata().GetName()}] = true
		if n := p.GetSpec().GetNodeName(); n != "" {
			nodeSet[n] = true
		}
	}
	nodes := make([]string, 0, len(nodeSet))
	for n := range nodeSet {
		nodes = append(nodes, n)
	}
	sums, sumErr := summaries(ctx, api, nodes)
	var metrics []podMetrics
	for _, s := range sums {
		for _, sp := range s.Pods {
			key := [2]string{sp.PodRef.Namespace, sp.PodRef.Name}
			if !wanted[key] || len(sp.Containers) == 0 {
				continue
			}
			// A pod is reported whole or not at all, as metrics-server
			// drops a pod with a container it has no figures for.
			pm := podMetrics{namespace: key[0], name: key[1]}
			complete := true
			for _, c := range sp.Containers {
				u, ok := usageOf(c.CPU, c.Memory)
				if !ok {
					complete = false
					break
				}
				pm.containers = append(pm.containers, containerMetrics{name: c.Name, usage: u})
				pm.total.add(u)
			}
			if complete {
				delete(wanted, key) // a pod moving between nodes is counted once
				metrics = append(metrics, pm)
			}
		}
	}
	if len(metrics) == 0 {
		if len(pods) == 0 {
			if f.allNamespaces {
				fmt.Fprintln(o.streams.Err, "No resources found")
			} else {
				fmt.Fprintf(o.streams.Err, "No resources found in %s namespace.\n", ns)
			}
			return nil
		}
		if sumErr != nil && len(sums) == 0 {
			return o.printError(sumErr)
		}
		// As kubectl's verifyEmptyMetrics: a pod long past its start
		// should have had metrics by now.
		for _, p := range pods {
			created := p.GetMetadata().GetCreationTimestamp().AsTime()
			if age := time.Since(created); age > metricsCreationDelay {
				return fmt.Errorf("Metrics not available for pod %s/%s, age: %s", p.GetMetadata().GetNamespace(), p.GetMetadata().GetName(), age.String())
			}
		}
		return errMetricsNotAvailable
	}
	printPodMetrics(o.streams.Out, metrics, f)
	return nil
}

func printPodMetrics(out io.Writer, metrics []podMetrics, f topPodFlags) {
	less := func(a, b usage, an, bn string) bool {
		switch f.sortBy {
		case sortByCPU:
			return a.milliCPU() > b.milliCPU()
		case sortByMemory:
			return a.bytes > b.bytes
		}
		return an < bn
	}
	sort.SliceStable(metrics, func(i, j int) bool {
		a, b := metrics[i], metrics[j]
		if f.sortBy == "" && f.allNamespaces && a.namespace != b.namespace {
			return a.namespace < b.namespace
		}
		return less(a.total, b.total, a.name, b.name)
	})
	w := printers.NewTabWriter(out)
	defer w.Flush()
	if !f.noHeaders {
		if f.allNamespaces {
			fmt.Fprint(w, "NAMESPACE\t")
		}
		if f.containers {
			fmt.Fprint(w, "POD\t")
		}
		fmt.Fprint(w, "NAME\tCPU(cores)\tMEMORY(bytes)\t\n")
	}
	line := func(ns, pod, name string, u usage) {
		if f.allNamespaces {
			fmt.Fprintf(w, "%s\t", ns)
		}
		if f.containers {
			fmt.Fprintf(w, "%s\t", pod)
		}
		fmt.Fprintf(w, "%s\t%dm\t%dMi\t\n", name, u.milliCPU(), u.bytes/(1<<20))
	}
	for _, m := range metrics {
		if !f.containers {
			line(m.namespace, m.name, m.name, m.total)
			continue
		}
		sort.SliceStable(m.containers, func(i, j int) bool {
			a, b := m.containers[i], m.containers[j]
			return less(a.usage, b.usage, a.name, b.name)
		})
		for _, c := range m.containers {
			line(m.namespace, m.name, c.name, c.usage)
		}
	}
}
