// Package cmd holds skiffctl's commands, built on cobra and laid out as
// kubectl's: each verb in its own file, sharing the connection, manifest
// reading and error printing here.
package cmd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"skiff.dev/client"
	"skiff.dev/client/config"
	"skiff.dev/proto/apierrors"
	"skiff.dev/proto/apipb"
)

// Streams are the command's standard streams.
type Streams struct {
	In       io.Reader
	Out, Err io.Writer
}

// Dialer connects to the apiserver; tests inject one.
type Dialer func(ctx context.Context, o *Options) (grpc.ClientConnInterface, string, error)

// Options are the global flags.
type Options struct {
	Kubeconfig    string
	Context       string
	Namespace     string
	AllNamespaces bool
	Verbosity     int

	streams Streams
	dial    Dialer
	server  string
	conn    grpc.ClientConnInterface
	ns      string
}

// exitError carries kubectl's exit code for a printed error.
type exitError struct{ code int }

func (e exitError) Error() string { return fmt.Sprintf("exit %d", e.code) }

// Main runs skiffctl with args and returns the exit code.
func Main(s Streams, args []string, dial Dialer) int {
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	return Run(ctx, s, args, dial)
}

// Run is Main under the caller's context, whose end is the user's Ctrl-C:
// commands that run until interrupted (get -w) stop cleanly when it ends.
func Run(ctx context.Context, s Streams, args []string, dial Dialer) int {
	root := NewRoot(s, dial)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return 0
	}
	var ee exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	fmt.Fprintln(s.Err, "error: "+err.Error())
	return 1
}

// NewRoot builds the command tree.
func NewRoot(s Streams, dial Dialer) *cobra.Command {
	o := &Options{streams: s, dial: dial}
	if o.dial == nil {
		o.dial = dialConfig
	}
	root := &cobra.Command{
		Use:           "skiffctl",
		Short:         "skiffctl controls a Skiff cluster, as kubectl controls Kubernetes",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(s.Out)
	root.SetErr(s.Err)
	root.SetIn(s.In)
	f := root.PersistentFlags()
	f.StringVar(&o.Kubeconfig, "kubeconfig", "", "Path to the client config file (default $SKIFFCONFIG, then ~/.skiff/config).")
	f.StringVar(&o.Context, "context", "", "The name of the client config context to use.")
	f.StringVarP(&o.Namespace, "namespace", "n", "", "If present, the namespace scope for this CLI request.")
	f.IntVarP(&o.Verbosity, "v", "v", 0, "Number for the log level verbosity.")
	root.AddCommand(
		newApply(o), newCreate(o), newReplace(o), newGet(o), newDelete(o),
		newConfig(o), newVersion(o), newAPIResources(o), newCompletion(o),
		newMetaCommand(o, "label", "labels", "labeled"), newMetaCommand(o, "annotate", "annotations", "annotated"),
		newPatch(o), newScale(o), newCordon(o, true), newCordon(o, false), newHistory(o), newDescribe(o), newRollout(o), newSet(o), newWait(o), newDrain(o), newEdit(o), newDiff(o), newExplain(o),
	)
	root.AddCommand(newLogs(o))
	root.AddCommand(newExec(o), newAttach(o), newPortForward(o), newCp(o), newRun(o))
	root.AddCommand(newTop(o), newAutoscale(o))
	return root
}

func dialConfig(_ context.Context, o *Options) (grpc.ClientConnInterface, string, error) {
	cfg, err := config.Load(config.Path(o.Kubeconfig))
	if err != nil {
		return nil, "", err
	}
	r, err := cfg.Resolve(o.Context)
	if err != nil {
		return nil, "", err
	}
	var opts []grpc.DialOption
	if o.Verbosity >= 6 {
		opts = append(opts, grpc.WithUnaryInterceptor(o.logCalls), grpc.WithStreamInterceptor(o.logStreams))
	}
	conn, err := r.Dial(opts...)
	if err != nil {
		return nil, "", err
	}
	if o.Namespace == "" {
		o.ns = r.Namespace
	}
	return conn, r.Server, nil
}

// client connects once per command.
func (o *Options) client(ctx context.Context) (*client.Client, error) {
	if o.conn == nil {
		conn, server, err := o.dial(ctx, o)
		if err != nil {
			return nil, err
		}
		o.conn, o.server = conn, server
	}
	return client.New(o.conn), nil
}

// namespace is the request's namespace: -n, else the context's, else default.
func (o *Options) namespace() string {
	switch {
	case o.Namespace != "":
		return o.Namespace
	case o.ns != "":
		return o.ns
	}
	return "default"
}

// printError writes err as kubectl would and returns the exit error.
func (o *Options) printError(err error) error {
	fmt.Fprintln(o.streams.Err, o.describeError(err))
	return exitError{code: 1}
}

func (o *Options) describeError(err error) string {
	st, ok := status.FromError(err)
	if !ok {
		return "error: " + err.Error()
	}
	reason := apierrors.ReasonOf(err)
	switch {
	case reason == apierrors.ReasonInvalid:
		return invalidMessage(err)
	case st.Code() == codes.Unavailable && reason == apierrors.ReasonUnknown:
		server := o.server
		if server == "" {
			server = "the server"
		}
		return fmt.Sprintf("The connection to the server %s was refused - did you specify the right host or port?", server)
	case reason == apierrors.ReasonUnauthorized || st.Code() == codes.Unauthenticated:
		return "error: You must be logged in to the server (Unauthorized)"
	case reason != apierrors.ReasonUnknown:
		return fmt.Sprintf("Error from server (%s): %s", reason, st.Message())
	}
	return fmt.Sprintf("Error from server: %s", st.Message())
}

// invalidMessage is kubectl's form: `The Deployment "neg" is invalid: path: why`,
// or one "* path: why" line per field when there are several.
func invalidMessage(err error) string {
	md := apierrors.Metadata(err)
	kind, name := md["kind"], md["name"]
	vs := apierrors.FieldViolations(err)
	head := fmt.Sprintf("The %s %q is invalid: ", kind, name)
	switch len(vs) {
	case 0:
		return head + apierrors.Message(err)
	case 1:
		return head + vs[0].Field + ": " + vs[0].Description
	}
	lines := make([]string, len(vs))
	for i, v := range vs {
		lines[i] = "* " + v.Field + ": " + v.Description
	}
	return head + "\n" + strings.Join(lines, "\n")
}

// logCalls is -v=6 and above: one line per API call on stderr, as kubectl's
// round-tripper logging ("GET ... 200 OK in 5 milliseconds"); -v=8 adds the
// request body.
func (o *Options) logCalls(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	start := time.Now()
	err := invoker(ctx, method, req, reply, cc, opts...)
	fmt.Fprintf(o.streams.Err, "I%s %s %s %s in %d milliseconds\n", time.Now().Format("0102 15:04:05.000000"),
		method, describeRequest(req), status.Code(err), time.Since(start).Milliseconds())
	if o.Verbosity >= 8 {
		fmt.Fprintf(o.streams.Err, "Request: %v\n", req)
	}
	return err
}

func (o *Options) logStreams(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	fmt.Fprintf(o.streams.Err, "I%s %s (stream)\n", time.Now().Format("0102 15:04:05.000000"), method)
	return streamer(ctx, desc, cc, method, opts...)
}

// describeRequest names what a request is about: "apps/v1 deployments default/web".
func describeRequest(req any) string {
	type named interface {
		GetResource() *apipb.Resource
		GetNamespace() string
	}
	n, ok := req.(named)
	if !ok {
		return ""
	}
	r := n.GetResource()
	s := r.GetResource()
	if r.GetGroup() != "" {
		s = r.GetGroup() + "/" + r.GetVersion() + " " + s
	}
	if n.GetNamespace() != "" {
		s += " " + n.GetNamespace()
	}
	if x, ok := req.(interface{ GetName() string }); ok && x.GetName() != "" {
		s += "/" + x.GetName()
	}
	return s
}
