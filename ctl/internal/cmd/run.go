package cmd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"skiff.dev/client"
	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
)

type runFlags struct {
	image, restart    string
	labels            string
	env               []string
	port              int
	command           bool
	rm, quiet         bool
	stream            streamFlags
	podRunningTimeout time.Duration
}

func newRun(o *Options) *cobra.Command {
	var f runFlags
	c := &cobra.Command{
		Use:   "run NAME --image=image [--env=\"key=value\"] [--port=port] [--restart=Always|OnFailure|Never] [--command] -- [COMMAND] [args...]",
		Short: "Run a particular image on the cluster",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.run(cmd.Context(), args[0], args[1:], f)
		},
	}
	fl := c.Flags()
	fl.StringVar(&f.image, "image", "", "The image for the container to run.")
	fl.StringVar(&f.restart, "restart", "Always", "The restart policy for this Pod. Legal values [Always, OnFailure, Never].")
	fl.StringVarP(&f.labels, "labels", "l", "", "Comma separated labels to apply to the pod. Will override previous values.")
	fl.StringArrayVar(&f.env, "env", nil, "Environment variables to set in the container.")
	fl.IntVar(&f.port, "port", -1, "The port that this container exposes.")
	fl.BoolVar(&f.command, "command", false, "If true and extra arguments are present, use them as the 'command' field in the container, rather than the 'args' field which is the default.")
	fl.BoolVar(&f.rm, "rm", false, "If true, delete the pod after it exits.  Only valid when attaching to the container, e.g. with '--attach' or with '-i/--stdin'.")
	fl.BoolVarP(&f.stream.stdin, "stdin", "i", false, "Keep stdin open on the container in the pod, even if nothing is attached.")
	fl.BoolVarP(&f.stream.tty, "tty", "t", false, "Allocate a TTY for the container in the pod.")
	fl.BoolVarP(&f.quiet, "quiet", "q", false, "If true, suppress prompt messages.")
	fl.DurationVar(&f.podRunningTimeout, "pod-running-timeout", time.Minute, "The length of time to wait until the pod is running")
	return c
}

func (f *runFlags) pod(name string, args []string) (*corev1.Pod, error) {
	if f.image == "" {
		return nil, errors.New("--image is required")
	}
	switch f.restart {
	case "Always", "OnFailure", "Never":
	default:
		return nil, fmt.Errorf("invalid restart policy: %s", f.restart)
	}
	if f.stream.tty && !f.stream.stdin {
		return nil, errors.New("-i/--stdin is required for containers with -t/--tty=true")
	}
	if f.rm && !f.stream.stdin {
		return nil, errors.New("--rm should only be used for attached containers")
	}
	labels := map[string]string{"run": name}
	if f.labels != "" {
		labels = map[string]string{}
		for _, kv := range strings.Split(f.labels, ",") {
			k, v, ok := strings.Cut(kv, "=")
			if !ok {
				return nil, fmt.Errorf("invalid label spec: %s", kv)
			}
			labels[k] = v
		}
	}
	c := &corev1.Container{Name: name, Image: f.image, Stdin: f.stream.stdin, StdinOnce: f.stream.stdin, Tty: f.stream.tty}
	if len(args) > 0 {
		if f.command {
			c.Command = args
		} else {
			c.Args = args
		}
	}
	for _, e := range f.env {
		k, v, ok := strings.Cut(e, "=")
		if !ok {
			return nil, fmt.Errorf("invalid env: %s", e)
		}
		c.Env = append(c.Env, &corev1.EnvVar{Name: k, Value: v})
	}
	if f.port > 0 {
		c.Ports = []*corev1.ContainerPort{{ContainerPort: int32(f.port)}}
	}
	return &corev1.Pod{
		Metadata: &metav1.ObjectMeta{Name: name, Labels: labels},
		Spec:     &corev1.PodSpec{Containers: []*corev1.Container{c}, RestartPolicy: f.restart},
	}, nil
}

func (o *Options) run(ctx context.Context, name string, args []string, f runFlags) error {
	pod, err := f.pod(name, args)
	if err != nil {
		return err
	}
	c, err := o.client(ctx)
	if err != nil {
		return o.printError(err)
	}
	ns := o.namespace()
	pods := client.For[*corev1.Pod](c, ns)
	if _, err := pods.Create(ctx, pod); err != nil {
		return o.printError(err)
	}
	if !f.stream.stdin {
		fmt.Fprintf(o.streams.Out, "pod/%s created\n", name)
		return nil
	}
	code, err := o.runAttached(ctx, c, ns, name, f)
	if f.rm {
		// The user's Ctrl-C ended ctx: the pod is still deleted.
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		if _, derr := pods.Delete(dctx, name, client.DeleteOptions{}); derr != nil {
			return o.printError(derr)
		}
		fmt.Fprintf(o.streams.Out, "pod \"%s\" deleted\n", name)
	}
	if err != nil {
		return err
	}
	if code != 0 {
		return exitError{code: code}
	}
	return nil
}

// runAttached waits for the pod to run, attaches to it (or prints its log
// if it already finished) and, for a pod that does not restart, returns its
// container's exit code, as kubectl run -i does.
func (o *Options) runAttached(ctx context.Context, c *client.Client, ns, name string, f runFlags) (int, error) {
	pods := client.For[*corev1.Pod](c, ns)
	pod, err := o.waitPod(ctx, pods, name, f.podRunningTimeout, func(p *corev1.Pod) bool {
		ph := p.GetStatus().GetPhase()
		return ph == "Running" || ph == "Succeeded" || ph == "Failed"
	})
	if err != nil {
		return 0, err
	}
	attached := false
	if pod.GetStatus().GetPhase() == "Running" {
		s := f.stream
		s.quiet = f.quiet
		t := o.setupTTY(&s)
		opts := client.ExecOptions{Namespace: ns, Name: name, Container: name, Stdin: o.streams.In, Stdout: o.streams.Out, TTY: s.tty}
		if !s.tty {
			opts.Stderr = o.streams.Err
		}
		actx, cancel := context.WithCancel(ctx)
		if t != nil {
			if !f.quiet {
				fmt.Fprintln(o.streams.Err, "If you don't see a command prompt, try pressing enter.")
			}
			if sctx, err := t.raw(actx); err == nil {
				actx = sctx
				opts.Resize = t.sizes(actx, o.streams.Out)
			} else {
				t = nil
			}
		}
		err = c.Attach(actx, opts)
		interrupted := actx.Err() != nil
		cancel()
		if t != nil {
			t.restore()
		}
		attached = err == nil
		if err != nil && interrupted {
			// Cut short: kubectl exits 1. --rm still deletes the pod.
			return 1, nil
		}
	}
	if !attached {
		// The container finished before the attach, or refused it: its
		// log is what the user would have seen.
		if err := o.printLog(ctx, c, ns, name); err != nil {
			return 0, err
		}
	}
	if f.restart != "Never" {
		return 0, nil
	}
	pod, err = o.waitPod(ctx, pods, name, f.podRunningTimeout, func(p *corev1.Pod) bool {
		ph := p.GetStatus().GetPhase()
		return ph == "Succeeded" || ph == "Failed"
	})
	if err != nil {
		return 0, err
	}
	for _, cs := range pod.GetStatus().GetContainerStatuses() {
		if t := cs.GetState().GetTerminated(); t != nil && t.GetExitCode() != 0 {
			return int(t.GetExitCode()), nil
		}
	}
	return 0, nil
}

func (o *Options) printLog(ctx context.Context, c *client.Client, ns, name string) error {
	r, err := c.PodLogs(ctx, ns, name, client.LogOptions{Container: name})
	if err != nil {
		return o.printError(err)
	}
	defer r.Close()
	_, err = io.Copy(o.streams.Out, r)
	return err
}

// waitPod polls the pod until done says so or timeout passes.
func (o *Options) waitPod(ctx context.Context, pods *client.Typed[*corev1.Pod], name string, timeout time.Duration, done func(*corev1.Pod) bool) (*corev1.Pod, error) {
	deadline := time.Now().Add(timeout)
	for {
		p, err := pods.Get(ctx, name)
		if err != nil {
			return nil, o.printError(err)
		}
		if done(p) {
			return p, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("timed out waiting for the condition on pods/%s (phase %s)", name, p.GetStatus().GetPhase())
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}
