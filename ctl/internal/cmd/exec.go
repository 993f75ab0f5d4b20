package cmd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"skiff.dev/client"
	corev1 "skiff.dev/proto/api/core/v1"
)

// defaultContainerAnnotation names the container kubectl picks when none
// is given.
const defaultContainerAnnotation = "kubectl.kubernetes.io/default-container"

// streamFlags are exec's and attach's -c, -i, -t and -q.
type streamFlags struct {
	container string
	stdin     bool
	tty       bool
	quiet     bool
}

func (f *streamFlags) add(c *cobra.Command) {
	c.Flags().StringVarP(&f.container, "container", "c", "", "Container name. If omitted, use the kubectl.kubernetes.io/default-container annotation for selecting the container, or the first container in the pod will be chosen.")
	c.Flags().BoolVarP(&f.stdin, "stdin", "i", false, "Pass stdin to the container")
	c.Flags().BoolVarP(&f.tty, "tty", "t", false, "Stdin is a TTY")
	c.Flags().BoolVarP(&f.quiet, "quiet", "q", false, "Only print output from the remote session")
}

func newExec(o *Options) *cobra.Command {
	var f streamFlags
	c := &cobra.Command{
		Use:   "exec (POD | TYPE/NAME) [-c CONTAINER] [flags] -- COMMAND [args...]",
		Short: "Execute a command in a container",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			dash := cmd.ArgsLenAtDash()
			if dash < 0 {
				if len(args) > 1 {
					return errors.New("exec [POD] [COMMAND] is not supported anymore. Use exec [POD] -- [COMMAND] instead")
				}
				return errors.New("you must specify at least one command for the container")
			}
			if dash != 1 {
				return errors.New("exactly one pod name is expected before --")
			}
			if len(args) == 1 {
				return errors.New("you must specify at least one command for the container")
			}
			return o.runRemote(cmd.Context(), f, args[0], args[1:], "exec")
		},
	}
	f.add(c)
	return c
}

func newAttach(o *Options) *cobra.Command {
	var f streamFlags
	c := &cobra.Command{
		Use:   "attach (POD | TYPE/NAME) -c CONTAINER",
		Short: "Attach to a running container",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.runRemote(cmd.Context(), f, args[0], nil, "attach")
		},
	}
	f.add(c)
	return c
}

// podName accepts POD, pod/POD and pods/POD.
func podName(arg string) (string, error) {
	if kind, name, ok := strings.Cut(arg, "/"); ok {
		switch strings.ToLower(kind) {
		case "pod", "pods", "po":
			return name, nil
		}
		return "", fmt.Errorf("cannot attach to %s: only pods are supported", kind)
	}
	return arg, nil
}

// pickContainer is kubectl's default: -c, else the default-container
// annotation, else the first container, saying so when there were others.
func pickContainer(pod *corev1.Pod, container string, quiet bool, errOut io.Writer) string {
	if container != "" {
		return container
	}
	if name := pod.GetMetadata().GetAnnotations()[defaultContainerAnnotation]; name != "" {
		for _, c := range pod.GetSpec().GetContainers() {
			if c.GetName() == name {
				return name
			}
		}
		if !quiet {
			fmt.Fprintf(errOut, "Default container name %q not found in pod %s\n", name, pod.GetMetadata().GetName())
		}
	}
	cs := pod.GetSpec().GetContainers()
	if len(cs) == 0 {
		return ""
	}
	if len(cs) > 1 && !quiet {
		names := make([]string, len(cs))
		for i, c := range cs {
			names[i] = c.GetName()
		}
		fmt.Fprintf(errOut, "Defaulted container %q out of: %s\n", cs[0].GetName(), strings.Join(names, ", "))
	}
	return cs[0].GetName()
}

// terminal is stdin put in raw mode for the session, with its sizes.
type terminal struct {
	in      *os.File
	restore func()
}

// setupTTY is kubectl's StreamOptions.SetupTTY: a TTY needs stdin, and a
// terminal on it.
func (o *Options) setupTTY(f *streamFlags) *terminal {
	if !f.stdin {
		f.tty = false
		return nil
	}
	if !f.tty {
		return nil
	}
	in, ok := o.streams.In.(*os.File)
	if !ok || !term.IsTerminal(int(in.Fd())) {
		f.tty = false
		if !f.quiet {
			fmt.Fprintln(o.streams.Err, "Unable to use a TTY - input is not a terminal or the right kind of file")
		}
		return nil
	}
	return &terminal{in: in}
}

// raw puts the terminal in raw mode until restore is called, and returns
// ctx ended also by SIGHUP and SIGQUIT, and by restore. kubectl restores
// its terminal on SIGHUP, SIGINT, SIGTERM and SIGQUIT; Main's context
// covers SIGINT and SIGTERM, and Go's default for the other two exits with
// the terminal left raw. A raw terminal sends no signal from the keyboard:
// these come from a closed window, kill or timeout(1).
func (t *terminal) raw(ctx context.Context) (context.Context, error) {
	// Caught before the terminal goes raw, so that no moment is left in
	// which they would exit with it raw.
	sctx, stop := signal.NotifyContext(ctx, syscall.SIGHUP, syscall.SIGQUIT)
	st, err := term.MakeRaw(int(t.in.Fd()))
	if err != nil {
		stop()
		return ctx, err
	}
	var once sync.Once
	t.restore = func() {
		once.Do(func() {
			term.Restore(int(t.in.Fd()), st)
			stop()
		})
	}
	return sctx, nil
}

// sizes sends the terminal's size now and on every SIGWINCH until ctx ends.
func (t *terminal) sizes(ctx context.Context, out io.Writer) <-chan client.TerminalSize {
	fd := int(t.in.Fd())
	if f, ok := out.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		fd = int(f.Fd())
	}
	// Caught before the first size is read: a resize in between is not
	// lost.
	winch := make(chan os.Signal, 1)
	signal.Notify(winch, syscall.SIGWINCH)
	context.AfterFunc(ctx, func() { signal.Stop(winch) })
	return followSizes(ctx, winch, func() (client.TerminalSize, bool) {
		w, h, err := term.GetSize(fd)
		return client.TerminalSize{Width: uint16(w), Height: uint16(h)}, err == nil
	})
}

// followSizes sends size's answer now and after each tick until ctx ends.
// The channel holds one size, always the newest: one the stream has not
// taken yet is replaced rather than the new one dropped, so that a burst of
// resizes (a window dragged larger) ends at the terminal's last size.
func followSizes(ctx context.Context, tick <-chan os.Signal, size func() (client.TerminalSize, bool)) <-chan client.TerminalSize {
	ch := make(chan client.TerminalSize, 1)
	// Only one goroutine sends, so an emptied channel has room.
	send := func() {
		sz, ok := size()
		if !ok {
			return
		}
		for {
			select {
			case ch <- sz:
				return
			default:
			}
			select {
			case <-ch:
			default:
			}
		}
	}
	send()
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick:
				send()
			}
		}
	}()
	return ch
}

// runRemote is exec (command set) and attach.
func (o *Options) runRemote(ctx context.Context, f streamFlags, arg string, command []string, verb string) error {
	name, err := podName(arg)
	if err != nil {
		return err
	}
	c, err := o.client(ctx)
	if err != nil {
		return o.printError(err)
	}
	ns := o.namespace()
	pod, err := client.For[*corev1.Pod](c, ns).Get(ctx, name)
	if err != nil {
		return o.printError(err)
	}
	if p := pod.GetStatus().GetPhase(); p == "Succeeded" || p == "Failed" {
		if verb == "attach" {
			return fmt.Errorf("cannot attach a container in a completed pod; current phase is %s", p)
		}
		return fmt.Errorf("cannot exec into a container in a completed pod; current phase is %s", p)
	}
	container := pickContainer(pod, f.container, f.quiet, o.streams.Err)
	t := o.setupTTY(&f)
	opts := client.ExecOptions{Namespace: ns, Name: name, Container: container, Command: command, Stdout: o.streams.Out}
	if f.stdin {
		opts.Stdin = o.streams.In
	}
	if !f.tty {
		opts.Stderr = o.streams.Err
	}
	opts.TTY = f.tty
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if t != nil {
		if verb == "attach" && !f.quiet {
			fmt.Fprintln(o.streams.Err, "If you don't see a command prompt, try pressing enter.")
		}
		if ctx, err = t.raw(ctx); err != nil {
			return err
		}
		defer t.restore()
		opts.Resize = t.sizes(ctx, o.streams.Out)
	}
	if verb == "attach" {
		err = c.Attach(ctx, opts)
	} else {
		err = c.Exec(ctx, opts)
	}
	// Before restore, which ends ctx too.
	interrupted := ctx.Err() != nil
	if t != nil {
		t.restore()
	}
	var exit *client.ExitError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &exit):
		if !f.quiet {
			fmt.Fprintln(o.streams.Err, exit.Error())
		}
		return exitError{code: exit.Code}
	case interrupted:
		// Cut short (Ctrl-C, a signal): no success to report, and nothing
		// to say, as kubectl, which exits 1.
		return exitError{code: 1}
	}
	return o.printError(err)
}
