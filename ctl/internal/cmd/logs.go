package cmd

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"skiff.dev/client"
	appsv1 "skiff.dev/proto/api/apps/v1"
	batchv1 "skiff.dev/proto/api/batch/v1"
	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
)

type logsFlags struct {
	container      string
	follow         bool
	previous       bool
	timestamps     bool
	allContainers  bool
	prefix         bool
	ignoreErrors   bool
	tail           int64
	limitBytes     int64
	since          time.Duration
	sinceTime      string
	selector       string
	maxLogRequests int
}

func newLogs(o *Options) *cobra.Command {
	var f logsFlags
	c := &cobra.Command{
		Use:   "logs [-f] [-p] (POD | TYPE/NAME) [-c CONTAINER]",
		Short: "Print the logs for a container in a pod",
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.runLogs(cmd.Context(), cmd, f, args)
		},
	}
	fl := c.Flags()
	fl.StringVarP(&f.container, "container", "c", "", "Print the logs of this container")
	fl.BoolVarP(&f.follow, "follow", "f", false, "Specify if the logs should be streamed.")
	fl.BoolVarP(&f.previous, "previous", "p", false, "If true, print the logs for the previous instance of the container in a pod if it exists.")
	fl.BoolVar(&f.timestamps, "timestamps", false, "Include timestamps on each line in the log output")
	fl.BoolVar(&f.allContainers, "all-containers", false, "Get all containers' logs in the pod(s).")
	fl.BoolVar(&f.prefix, "prefix", false, "Prefix each log line with the log source (pod name and container name)")
	fl.BoolVar(&f.ignoreErrors, "ignore-errors", false, "If watching / following pod logs, allow for any errors that occur to be non-fatal")
	fl.Int64Var(&f.tail, "tail", -1, "Lines of recent log file to display. Defaults to -1 with no selector, showing all log lines otherwise 10, if a selector is provided.")
	fl.Int64Var(&f.limitBytes, "limit-bytes", 0, "Maximum bytes of logs to return. Defaults to no limit.")
	fl.DurationVar(&f.since, "since", 0, "Only return logs newer than a relative duration like 5s, 2m, or 3h. Defaults to all logs. Only one of since-time / since may be used.")
	fl.StringVar(&f.sinceTime, "since-time", "", "Only return logs after a specific date (RFC3339). Defaults to all logs. Only one of since-time / since may be used.")
	fl.StringVarP(&f.selector, "selector", "l", "", "Selector (label query) to filter on, supports '=', '==', and '!='.(e.g. -l key1=value1,key2=value2). Matching objects must satisfy all of the specified label constraints.")
	fl.IntVar(&f.maxLogRequests, "max-log-requests", 5, "Specify maximum number of concurrent logs to follow when using by a selector. Defaults to 5.")
	return c
}

// logSource is one container's log to print.
type logSource struct {
	pod       string
	container string
}

func (s logSource) prefix() string { return fmt.Sprintf("[pod/%s/%s] ", s.pod, s.container) }

func (o *Options) runLogs(ctx context.Context, cmd *cobra.Command, f logsFlags, args []string) error {
	// Validation first, as kubectl's LogsOptions.Validate.
	switch {
	case f.selector == "" && len(args) == 0:
		return errors.New("expected 'logs [-f] [-p] (POD | TYPE/NAME) [-c CONTAINER]'.\nPOD or TYPE/NAME is a required argument for the logs command")
	case f.selector != "" && len(args) > 0:
		return errors.New("only a selector (-l) or a POD name is allowed")
	case len(args) > 2:
		return errors.New("expected 'logs [-f] [-p] (POD | TYPE/NAME) [-c CONTAINER]'.\nPOD or TYPE/NAME is a required argument for the logs command")
	}
	if len(args) == 2 {
		if f.container != "" {
			return fmt.Errorf("only one of -c or an inline [CONTAINER] arg is allowed")
		}
		f.container = args[1]
	}
	if f.allContainers && f.container != "" {
		return errors.New("--container cannot be specified when --all-containers is set")
	}
	if f.since != 0 && f.sinceTime != "" {
		return errors.New("at most one of `sinceTime` or `sinceSeconds` may be specified")
	}
	if f.limitBytes < 0 {
		return errors.New("--limit-bytes must be greater than 0")
	}
	if f.since < 0 {
		return errors.New("--since must be greater than 0")
	}
	if f.tail < -1 {
		return errors.New("--tail must be greater than or equal to -1")
	}
	if f.maxLogRequests <= 0 {
		return errors.New("--max-log-requests must be greater than 0")
	}
	opts := client.LogOptions{Follow: f.follow, Previous: f.previous, Timestamps: f.timestamps}
	if f.sinceTime != "" {
		t, err := time.Parse(time.RFC3339, f.sinceTime)
		if err != nil {
			return fmt.Errorf("--since-time: %q is not an RFC3339 time", f.sinceTime)
		}
		opts.SinceTime = &t
	}
	if f.since != 0 {
		s := int64(math.Ceil(f.since.Seconds()))
		opts.SinceSeconds = &s
	}
	tail := f.tail
	if f.selector != "" && !cmd.Flags().Changed("tail") {
		tail = 10
	}
	if tail >= 0 {
		opts.TailLines = &tail
	}
	if f.limitBytes > 0 {
		opts.LimitBytes = &f.limitBytes
	}

	c, err := o.client(ctx)
	if err != nil {
		return err
	}
	ns := o.namespace()
	var pods []*corev1.Pod
	if f.selector != "" {
		l, err := client.For[*corev1.Pod](c, ns).List(ctx, client.ListOptions{LabelSelector: f.selector})
		if err != nil {
			return o.printError(err)
		}
		pods = l.Items
		sort.Slice(pods, func(i, j int) bool { return pods[i].GetMetadata().GetName() < pods[j].GetMetadata().GetName() })
		if len(pods) == 0 {
			fmt.Fprintf(o.streams.Err, "No resources found in %s namespace.\n", ns)
			return nil
		}
	} else {
		pod, err := o.podForObject(ctx, c, ns, args[0])
		if err != nil {
			return err
		}
		pods = []*corev1.Pod{pod}
	}

	var sources []logSource
	for _, p := range pods {
		if f.allContainers {
			for _, n := range allContainerNames(p) {
				sources = append(sources, logSource{pod: p.GetMetadata().GetName(), container: n})
			}
			continue
		}
		name := f.container
		if name == "" {
			name = o.defaultLogContainer(p)
		} else if !slices.Contains(allContainerNames(p), name) {
			return fmt.Errorf("container %s is not valid for pod %s", name, p.GetMetadata().GetName())
		}
		sources = append(sources, logSource{pod: p.GetMetadata().GetName(), container: name})
	}
	if f.follow && len(sources) > f.maxLogRequests {
		return fmt.Errorf("you are attempting to follow %d log streams, but maximum allowed concurrency is %d, use --max-log-requests to increase the limit", len(sources), f.maxLogRequests)
	}

	open := func(s logSource) (io.ReadCloser, error) {
		so := opts
		so.Container = s.container
		return c.PodLogs(ctx, ns, s.pod, so)
	}
	if f.follow && len(sources) > 1 {
		return o.followLogs(ctx, sources, open, f)
	}
	for _, s := range sources {
		r, err := open(s)
		if err != nil {
			if f.ignoreErrors {
				continue
			}
			return o.printError(err)
		}
		err = copyLog(o.streams.Out, r, s, f.prefix, nil)
		r.Close()
		if err != nil && ctx.Err() == nil {
			return o.printError(err)
		}
	}
	return nil
}

// followLogs reads every source at once, line by line, as kubectl's
// parallelConsumeRequest: lines of different sources never mix.
func (o *Options) followLogs(ctx context.Context, sources []logSource, open func(logSource) (io.ReadCloser, error), f logsFlags) error {
	var mu sync.Mutex
	var wg sync.WaitGroup
	errc := make(chan error, len(sources))
	for _, s := range sources {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := open(s)
			if err == nil {
				err = copyLog(o.streams.Out, r, s, f.prefix, &mu)
				r.Close()
			}
			if err != nil && ctx.Err() == nil {
				if f.ignoreErrors {
					fmt.Fprintln(o.streams.Err, o.describeError(err))
					return
				}
				errc <- err
			}
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case err := <-errc:
		return o.printError(err)
	}
}

// copyLog writes r to out, each line behind the source's prefix when
// asked; mu, when set, keeps lines of concurrent sources whole.
func copyLog(out io.Writer, r io.Reader, s logSource, prefix bool, mu *sync.Mutex) error {
	if !prefix && mu == nil {
		_, err := io.Copy(out, r)
		return err
	}
	br := bufio.NewReader(r)
	for {
		line, err := br.ReadBytes('\n')
		if len(line) > 0 {
			if mu != nil {
				mu.Lock()
			}
			if prefix {
				io.WriteString(out, s.prefix())
			}
			_, werr := out.Write(line)
			if mu != nil {
				mu.Unlock()
			}
			if werr != nil {
				return werr
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// defaultLogContainer is kubectl logs' choice: the default-container
// annotation if the pod has it, else the first container, saying so when
// there were others.
func (o *Options) defaultLogContainer(p *corev1.Pod) string {
	md := p.GetMetadata()
	if name := md.GetAnnotations()["kubectl.kubernetes.io/default-container"]; name != "" {
		for _, n := range allContainerNames(p) {
			if n == name {
				return name
			}
		}
		fmt.Fprintf(o.streams.Err, "Default container name %q not found in pod %s\n", name, md.GetName())
	}
	spec := p.GetSpec()
	if len(spec.GetContainers()) == 0 {
		return ""
	}
	first := spec.GetContainers()[0].GetName()
	if len(spec.GetContainers()) > 1 || len(spec.GetInitContainers()) > 0 || len(spec.GetEphemeralContainers()) > 0 {
		var names []string
		for _, c := range spec.GetContainers() {
			names = append(names, c.GetName())
		}
		for _, c := range spec.GetInitContainers() {
			names = append(names, c.GetName()+" (init)")
		}
		for _, c := range spec.GetEphemeralContainers() {
			names = append(names, c.GetEphemeralContainerCommon().GetName()+" (ephem)")
		}
		fmt.Fprintf(o.streams.Err, "Defaulted container %q out of: %s\n", first, strings.Join(names, ", "))
	}
	return first
}

// allContainerNames are --all-containers' order: init, regular, ephemeral.
func allContainerNames(p *corev1.Pod) []string {
	var names []string
	for _, c := range p.GetSpec().GetInitContainers() {
		names = append(names, c.GetName())
	}
	for _, c := range p.GetSpec().GetContainers() {
		names = append(names, c.GetName())
	}
	for _, c := range p.GetSpec().GetEphemeralContainers() {
		names = append(names, c.GetEphemeralContainerCommon().GetName())
	}
	return names
}

// podForObject is kubectl's LogsForObject target: a pod by name, or the
// first pod (by name) of a workload's selector.
func (o *Options) podForObject(ctx context.Context, c *client.Client, ns, arg string) (*corev1.Pod, error) {
	kind, name, ok := strings.Cut(arg, "/")
	if !ok {
		kind, name = "pod", arg
	}
	var sel *metav1.LabelSelector
	var err error
	switch strings.ToLower(kind) {
	case "pod", "pods", "po":
		p, err := client.For[*corev1.Pod](c, ns).Get(ctx, name)
		if err != nil {
			return nil, o.printError(err)
		}
		return p, nil
	case "deployment", "deployments", "deploy", "deployment.apps", "deployments.apps":
		var d *appsv1.Deployment
		d, err = client.For[*appsv1.Deployment](c, ns).Get(ctx, name)
		sel = d.GetSpec().GetSelector()
	case "replicaset", "replicasets", "rs", "replicaset.apps", "replicasets.apps":
		var r *appsv1.ReplicaSet
		r, err = client.For[*appsv1.ReplicaSet](c, ns).Get(ctx, name)
		sel = r.GetSpec().GetSelector()
	case "statefulset", "statefulsets", "sts", "statefulset.apps", "statefulsets.apps":
		var s *appsv1.StatefulSet
		s, err = client.For[*appsv1.StatefulSet](c, ns).Get(ctx, name)
		sel = s.GetSpec().GetSelector()
	case "daemonset", "daemonsets", "ds", "daemonset.apps", "daemonsets.apps":
		var d *appsv1.DaemonSet
		d, err = client.For[*appsv1.DaemonSet](c, ns).Get(ctx, name)
		sel = d.GetSpec().GetSelector()
	case "job", "jobs", "job.batch", "jobs.batch":
		var j *batchv1.Job
		j, err = client.For[*batchv1.Job](c, ns).Get(ctx, name)
		sel = j.GetSpec().GetSelector()
	default:
		return nil, fmt.Errorf("cannot get the logs from %s: only pods and workloads with a selector are supported", kind)
	}
	if err != nil {
		return nil, o.printError(err)
	}
	l, err := client.For[*corev1.Pod](c, ns).List(ctx, client.ListOptions{LabelSelector: selectorString(sel)})
	if err != nil {
		return nil, o.printError(err)
	}
	if len(l.Items) == 0 {
		return nil, fmt.Errorf("timed out waiting for the condition")
	}
	pods := l.Items
	sort.Slice(pods, func(i, j int) bool { return pods[i].GetMetadata().GetName() < pods[j].GetMetadata().GetName() })
	if len(pods) > 1 {
		fmt.Fprintf(o.streams.Err, "Found %d pods, using pod/%s\n", len(pods), pods[0].GetMetadata().GetName())
	}
	return pods[0], nil
}

// selectorString is a LabelSelector in the label query syntax.
func selectorString(s *metav1.LabelSelector) string {
	var parts []string
	keys := make([]string, 0, len(s.GetMatchLabels()))
	for k := range s.GetMatchLabels() {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		parts = append(parts, k+"="+s.GetMatchLabels()[k])
	}
	for _, e := range s.GetMatchExpressions() {
		switch e.GetOperator() {
		case "In":
			parts = append(parts, fmt.Sprintf("%s in (%s)", e.GetKey(), strings.Join(e.GetValues(), ",")))
		case "NotIn":
			parts = append(parts, fmt.Sprintf("%s notin (%s)", e.GetKey(), strings.Join(e.GetValues(), ",")))
		case "Exists":
			parts = append(parts, e.GetKey())
		case "DoesNotExist":
			parts = append(parts, "!"+e.GetKey())
		}
	}
	return strings.Join(parts, ",")
}
