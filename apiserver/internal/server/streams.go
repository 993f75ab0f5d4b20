package server

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"

	"github.com/gorilla/websocket"
	"google.golang.org/grpc"
	"k8s.io/apimachinery/pkg/util/httpstream"

	"skiff.dev/apiserver/internal/kubeletclient"
	corev1 "skiff.dev/proto/api/core/v1"
	"skiff.dev/proto/apierrors"
	"skiff.dev/proto/apipb"
	"skiff.dev/proto/scheme"
)

// The pods/exec, pods/attach and pods/portforward subresources: each gRPC
// stream becomes one connection to the kubelet of the pod's node, which
// proxies it to the runtime's stream server. Exec and attach speak
// upstream's remotecommand "v4.channel.k8s.io" over SPDY/3.1, one SPDY
// stream per standard stream, because only there can stdin be closed alone
// (the websocket channel protocol gets its close in v5, which containerd
// 1.6 does not speak). Port-forward speaks "v4.channel.k8s.io" over a
// websocket: every binary message starts with its channel number.

// channelProtocol is the protocol of exec, attach and port-forward
// streams, negotiated by X-Stream-Protocol-Version on SPDY and as the
// websocket subprotocol: containerd 1.6's stream server speaks no later one.
const channelProtocol = "v4.channel.k8s.io"

// Stream types of a remotecommand SPDY connection (upstream's
// v1.StreamType header and its values).
const (
	headerStreamType = "streamType"
	streamTypeError  = "error"
	streamTypeStdin  = "stdin"
	streamTypeStdout = "stdout"
	streamTypeStderr = "stderr"
	streamTypeResize = "resize"
)

// Channels of a port-forward websocket for its one port.
const (
	chanPortData byte = iota
	chanPortError
)

// SetKubeletClient gives the streams the client they reach kubelets with;
// call it before serving.
func (s *Service) SetKubeletClient(c *kubeletclient.Client) { s.kubelets = c }

func (s *Service) kubeletClient() (*kubeletclient.Client, error) {
	if s.kubelets == nil {
		return nil, apierrors.NewUnavailable("the apiserver has no kubelet client configured")
	}
	return s.kubelets, nil
}

var (
	podsRef  = &apipb.Resource{Version: "v1", Resource: "pods"}
	nodesRef = &apipb.Resource{Version: "v1", Resource: "nodes"}
)

func (s *Service) PodExec(stream apipb.API_PodExecServer) error {
	return s.remoteCommand(stream, "exec")
}

func (s *Service) PodAttach(stream apipb.API_PodAttachServer) error {
	return s.remoteCommand(stream, "attach")
}

// streamTarget is a stream's pod and the node that runs it.
type streamTarget struct {
	pod  *corev1.Pod
	node *corev1.Node
}

// target finds the pod and its node, with upstream's errors for a pod
// not yet scheduled.
func (s *Service) target(ctx context.Context, ns, name string) (*streamTarget, error) {
	pk, err := scheme.ForRef(podsRef)
	if err != nil {
		return nil, err
	}
	o, err := s.reg.Get(ctx, pk, ns, name, "")
	if err != nil {
		return nil, err
	}
	pod, ok := o.Msg.(*corev1.Pod)
	if !ok {
		return nil, apierrors.NewInternal(fmt.Errorf("pod %s/%s decoded as %T", ns, name, o.Msg))
	}
	nodeName := pod.GetSpec().GetNodeName()
	if nodeName == "" {
		return nil, apierrors.NewBadRequest(fmt.Sprintf("pod %s does not have a host assigned", name))
	}
	nk, err := scheme.ForRef(nodesRef)
	if err != nil {
		return nil, err
	}
	no, err := s.reg.Get(ctx, nk, "", nodeName, "")
	if err != nil {
		return nil, err
	}
	node, ok := no.Msg.(*corev1.Node)
	if !ok {
		return nil, apierrors.NewInternal(fmt.Errorf("node %s decoded as %T", nodeName, no.Msg))
	}
	return &streamTarget{pod: pod, node: node}, nil
}

// containerFor is upstream's choice of container for a stream: the one
// named, which must be the pod's, or the only one.
func containerFor(pod *corev1.Pod, container string) (string, error) {
	name := pod.GetMetadata().GetName()
	spec := pod.GetSpec()
	if container == "" {
		switch len(spec.GetContainers()) {
		case 1:
			return spec.GetContainers()[0].GetName(), nil
		case 0:
			return "", apierrors.NewBadRequest(fmt.Sprintf("a container name must be specified for pod %s", name))
		}
		names := make([]string, 0, len(spec.GetContainers()))
		for _, c := range spec.GetContainers() {
			names = append(names, c.GetName())
		}
		msg := fmt.Sprintf("a container name must be specified for pod %s, choose one of: [%s]", name, strings.Join(names, " "))
		if len(spec.GetInitContainers()) > 0 {
			inits := make([]string, 0, len(spec.GetInitContainers()))
			for _, c := range spec.GetInitContainers() {
				inits = append(inits, c.GetName())
			}
			msg += fmt.Sprintf(" or one of the init containers: [%s]", strings.Join(inits, " "))
		}
		return "", apierrors.NewBadRequest(msg)
	}
	for _, c := range spec.GetContainers() {
		if c.GetName() == container {
			return container, nil
		}
	}
	for _, c := range spec.GetInitContainers() {
		if c.GetName() == container {
			return container, nil
		}
	}
	for _, c := range spec.GetEphemeralContainers() {
		if c.GetEphemeralContainerCommon().GetName() == container {
			return container, nil
		}
	}
	return "", apierrors.NewBadRequest(fmt.Sprintf("container %s is not valid for pod %s", container, name))
}

// kubeletError turns a kubelet's refusal into the API error upstream's
// proxy would have passed on with the same status.
func kubeletError(err error) error {
	var ke *kubeletclient.Error
	if !errors.As(err, &ke) {
		if apierrors.ReasonOf(err) != apierrors.ReasonUnknown {
			return err
		}
		return apierrors.NewInternal(err)
	}
	reason := apierrors.ReasonInternal
	switch ke.Code {
	case http.StatusBadRequest:
		reason = apierrors.ReasonBadRequest
	case http.StatusNotFound:
		reason = apierrors.ReasonNotFound
	case http.StatusUnauthorized:
		reason = apierrors.ReasonUnauthorized
	case http.StatusForbidden:
		reason = apierrors.ReasonForbidden
	case http.StatusServiceUnavailable, http.StatusBadGateway:
		reason = apierrors.ReasonUnavailable
	}
	return apierrors.New(reason, ke.Error(), nil)
}

// dial opens the stream's websocket to the target's kubelet.
func (s *Service) dial(ctx context.Context, t *streamTarget, path string, q url.Values) (*websocket.Conn, error) {
	kc, err := s.kubeletClient()
	if err != nil {
		return nil, err
	}
	conn, err := kc.Dial(ctx, t.node, path, q, []string{channelProtocol})
	if err != nil {
		return nil, kubeletError(err)
	}
	if p := conn.Subprotocol(); p != channelProtocol {
		conn.Close()
		return nil, apierrors.NewInternal(fmt.Errorf("the kubelet on node %s chose websocket subprotocol %q, want %q", t.node.GetMetadata().GetName(), p, channelProtocol))
	}
	return conn, nil
}

func (s *Service) remoteCommand(stream grpc.BidiStreamingServer[apipb.StreamFrame, apipb.StreamFrame], sub string) error {
	ctx := stream.Context()
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	start := first.GetStart()
	c, err := s.begin("create", podsRef, sub)
	if err != nil {
		return err
	}
	if start == nil {
		return c.done(apierrors.NewBadRequest("the stream's first frame must be start"))
	}
	if err := c.authorize(ctx, start.GetNamespace(), start.GetName()); err != nil {
		return err
	}
	// Metrics count the stream as upstream counts its CONNECT.
	c.verb = "connect"
	ns := start.GetNamespace()
	if ns == "" {
		ns = "default"
	}
	if sub == "exec" && len(start.GetCommand()) == 0 {
		return c.done(apierrors.NewBadRequest("you must specify at least one command for the container"))
	}
	if !start.GetStdin() && !start.GetStdout() && !start.GetStderr() {
		return c.done(apierrors.NewBadRequest("you must specify at least 1 of stdin, stdout, stderr"))
	}
	t, err := s.target(ctx, ns, start.GetName())
	if err != nil {
		return c.done(err)
	}
	container, err := containerFor(t.pod, start.GetContainer())
	if err != nil {
		return c.done(err)
	}
	q := url.Values{}
	for _, a := range start.GetCommand() {
		q.Add("command", a)
	}
	for k, on := range map[string]bool{"input": start.GetStdin(), "output": start.GetStdout(), "error": start.GetStderr(), "tty": start.GetTty()} {
		if on {
			q.Set(k, "1")
		}
	}
	kc, err := s.kubeletClient()
	if err != nil {
		return c.done(err)
	}
	path := "/" + sub + "/" + url.PathEscape(ns) + "/" + url.PathEscape(start.GetName()) + "/" + url.PathEscape(container)
	conn, proto, err := kc.DialSPDY(ctx, t.node, path, q, []string{channelProtocol})
	if err != nil {
		return c.done(kubeletError(err))
	}
	defer conn.Close()
	if proto != channelProtocol {
		return c.done(apierrors.NewInternal(fmt.Errorf("the kubelet on node %s chose stream protocol %q, want %q", t.node.GetMetadata().GetName(), proto, channelProtocol)))
	}
	// A terminal has one output stream, so the runtime expects no stderr.
	cs, err := createCommandStreams(conn, start.GetStdin(), start.GetStdout(), start.GetStderr() && !start.GetTty(), start.GetTty())
	if err != nil {
		return c.done(apierrors.NewInternal(err))
	}
	go relayCommandInput(stream, conn, cs)
	return c.done(relayCommandOutput(stream, cs))
}

// commandStreams are the SPDY streams of one exec or attach; those not
// asked for are nil.
type commandStreams struct {
	errorStream, stdin, stdout, stderr, resize httpstream.Stream
}

// createCommandStreams opens the streams in client-go's order (v4's
// createStreams): error first, then stdin, stdout, stderr and, with a
// terminal, resize. The runtime waits for exactly the streams the request
// asked for.
func createCommandStreams(conn httpstream.Connection, stdin, stdout, stderr, tty bool) (*commandStreams, error) {
	cs := &commandStreams{}
	for _, s := range []struct {
		typ string
		on  bool
		to  *httpstream.Stream
	}{
		{streamTypeError, true, &cs.errorStream},
		{streamTypeStdin, stdin, &cs.stdin},
		{streamTypeStdout, stdout, &cs.stdout},
		{streamTypeStderr, stderr, &cs.stderr},
		{streamTypeResize, tty, &cs.resize},
	} {
		if !s.on {
			continue
		}
		h := http.Header{}
		h.Set(headerStreamType, s.typ)
		st, err := conn.CreateStream(h)
		if err != nil {
			return nil, fmt.Errorf("creating the %s stream: %w", s.typ, err)
		}
		*s.to = st
	}
	return cs, nil
}

// relayCommandInput carries the client's stdin and resizes to the kubelet
// until the client's stream ends. stdin_close, or the client's end of
// sending, half-closes the stdin stream: the command reads EOF and goes on.
func relayCommandInput(stream grpc.BidiStreamingServer[apipb.StreamFrame, apipb.StreamFrame], conn httpstream.Connection, cs *commandStreams) {
	var resize *json.Encoder
	if cs.resize != nil {
		resize = json.NewEncoder(cs.resize)
	}
	stdinOpen := cs.stdin != nil
	closeStdin := func() {
		if stdinOpen {
			stdinOpen = false
			cs.stdin.Close()
		}
	}
	for {
		f, err := stream.Recv()
		if err != nil {
			if err == io.EOF {
				closeStdin()
			} else {
				// The client is gone: end the command's streams too.
				conn.Close()
			}
			return
		}
		switch k := f.GetKind().(type) {
		case *apipb.StreamFrame_Stdin:
			if stdinOpen && len(k.Stdin) > 0 {
				if _, err := cs.stdin.Write(k.Stdin); err != nil {
					// The runtime closed stdin (the command exited): the
					// output side ends the stream.
					stdinOpen = false
				}
			}
		case *apipb.StreamFrame_StdinClose:
			closeStdin()
		case *apipb.StreamFrame_Resize:
			if resize != nil {
				// upstream's remotecommand.TerminalSize, untagged.
				resize.Encode(struct{ Width, Height uint16 }{uint16(k.Resize.GetWidth()), uint16(k.Resize.GetHeight())})
			}
		}
	}
}

// relayCommandOutput carries stdout and stderr to the client until the
// runtime ends them, then sends the command's exit status, which the error
// stream carries as a metav1.Status.
func relayCommandOutput(stream grpc.BidiStreamingServer[apipb.StreamFrame, apipb.StreamFrame], cs *commandStreams) error {
	var (
		mu      sync.Mutex // SendMsg is not safe for concurrent use
		sendErr error
		wg      sync.WaitGroup
	)
	copyOut := func(r io.Reader, frame func([]byte) *apipb.StreamFrame) {
		defer wg.Done()
		buf := make([]byte, 32<<10)
		for {
			n, err := r.Read(buf)
			if n > 0 {
				mu.Lock()
				if sendErr == nil {
					sendErr = stream.Send(frame(append([]byte(nil), buf[:n]...)))
				}
				failed := sendErr != nil
				mu.Unlock()
				if failed {
					return
				}
			}
			if err != nil {
				return
			}
		}
	}
	if cs.stdout != nil {
		wg.Add(1)
		go copyOut(cs.stdout, func(b []byte) *apipb.StreamFrame {
			return &apipb.StreamFrame{Kind: &apipb.StreamFrame_Stdout{Stdout: b}}
		})
	}
	if cs.stderr != nil {
		wg.Add(1)
		go copyOut(cs.stderr, func(b []byte) *apipb.StreamFrame {
			return &apipb.StreamFrame{Kind: &apipb.StreamFrame_Stderr{Stderr: b}}
		})
	}
	status, _ := io.ReadAll(cs.errorStream)
	wg.Wait()
	if sendErr != nil {
		return sendErr
	}
	return stream.Send(&apipb.StreamFrame{Kind: &apipb.StreamFrame_Exit{Exit: exitStatus(status)}})
}

// remoteStatus is the part of a metav1.Status the error channel carries
// that says how the command ended.
type remoteStatus struct {
	Status  string `json:"status"`
	Message string `json:"message"`
	Reason  string `json:"reason"`
	Details struct {
		Causes []struct {
			Reason  string `json:"reason"`
			Message string `json:"message"`
		} `json:"causes"`
	} `json:"details"`
}

// exitStatus reads the error channel's Status as kubectl does: Success is
// 0, NonZeroExitCode carries the code in its ExitCode cause, and any other
// failure is a message with code -1.
func exitStatus(raw []byte) *apipb.ExitStatus {
	if len(raw) == 0 {
		return &apipb.ExitStatus{Code: -1, Message: "the stream ended before the command reported how it exited"}
	}
	var st remoteStatus
	if err := json.Unmarshal(raw, &st); err != nil {
		return &apipb.ExitStatus{Code: -1, Message: fmt.Sprintf("error stream protocol error: %v in %q", err, raw)}
	}
	if st.Status == "Success" {
		return &apipb.ExitStatus{}
	}
	if st.Reason == "NonZeroExitCode" {
		for _, c := range st.Details.Causes {
			if c.Reason == "ExitCode" {
				if n, err := strconv.Atoi(c.Message); err == nil {
					return &apipb.ExitStatus{Code: int32(n), Message: st.Message}
				}
			}
		}
	}
	msg := st.Message
	if msg == "" {
		msg = string(raw)
	}
	return &apipb.ExitStatus{Code: -1, Message: msg}
}

func (s *Service) PodPortForward(stream apipb.API_PodPortForwardServer) error {
	ctx := stream.Context()
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	start := first.GetStart()
	c, err := s.begin("create", podsRef, "portforward")
	if err != nil {
		return err
	}
	if start == nil {
		return c.done(apierrors.NewBadRequest("the stream's first frame must be start"))
	}
	if err := c.authorize(ctx, start.GetNamespace(), start.GetName()); err != nil {
		return err
	}
	c.verb = "connect"
	ns := start.GetNamespace()
	if ns == "" {
		ns = "default"
	}
	port := start.GetPort()
	if port < 1 || port > 65535 {
		return c.done(apierrors.NewBadRequest(fmt.Sprintf("port %d must be between 1 and 65535", port)))
	}
	t, err := s.target(ctx, ns, start.GetName())
	if err != nil {
		return c.done(err)
	}
	conn, err := s.dial(ctx, t, "/portForward/"+url.PathEscape(ns)+"/"+url.PathEscape(start.GetName()),
		url.Values{"port": {strconv.Itoa(int(port))}})
	if err != nil {
		return c.done(err)
	}
	defer conn.Close()
	go relayPortInput(stream, conn)
	return c.done(relayPortOutput(stream, conn, uint16(port)))
}

// relayPortInput carries the client's bytes to the pod's port. The
// websocket cannot half-close, so the client's close ends the connection
// both ways, as kubectl's websocket port-forward does.
func relayPortInput(stream apipb.API_PodPortForwardServer, conn *websocket.Conn) {
	defer conn.Close()
	for {
		f, err := stream.Recv()
		if err != nil {
			return
		}
		switch k := f.GetKind().(type) {
		case *apipb.PortForwardFrame_Data:
			if len(k.Data) == 0 {
				continue
			}
			if err := conn.WriteMessage(websocket.BinaryMessage, append([]byte{chanPortData}, k.Data...)); err != nil {
				return
			}
		case *apipb.PortForwardFrame_Close:
			return
		}
	}
}

// relayPortOutput carries the pod's bytes to the client until the kubelet
// closes the websocket. Each channel's first message is the port, as two
// little-endian bytes, which only confirms the stream; an error channel's
// text ends the stream as an error frame, anything else with close.
func relayPortOutput(stream apipb.API_PodPortForwardServer, conn *websocket.Conn, port uint16) error {
	var seen [2]bool
	var errText []byte
	for {
		_, data, err := conn.ReadMessage()
		if err != nil {
			break
		}
		if len(data) == 0 || data[0] > chanPortError {
			continue
		}
		ch, data := data[0], data[1:]
		if !seen[ch] {
			if len(data) < 2 || binary.LittleEndian.Uint16(data) != port {
				return apierrors.NewInternal(fmt.Errorf("port-forward stream for port %d began with %v", port, data))
			}
			seen[ch] = true
			data = data[2:]
		}
		if len(data) == 0 {
			continue
		}
		if ch == chanPortError {
			errText = append(errText, data...)
			continue
		}
		if err := stream.Send(&apipb.PortForwardFrame{Kind: &apipb.PortForwardFrame_Data{Data: data}}); err != nil {
			return err
		}
	}
	if len(errText) > 0 {
		return stream.Send(&apipb.PortForwardFrame{Kind: &apipb.PortForwardFrame_Error{Error: string(errText)}})
	}
	return stream.Send(&apipb.PortForwardFrame{Kind: &apipb.PortForwardFrame_Close{Close: true}})
}
