package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"

	"google.golang.org/grpc"

	"skiff.dev/proto/apipb"
)

// TerminalSize is a terminal's size in characters, remotecommand's.
type TerminalSize struct {
	Width, Height uint16
}

// ExecOptions say what to run and where its streams go. A nil Stdin,
// Stdout or Stderr is not asked for.
type ExecOptions struct {
	Namespace, Name, Container string
	// Command is empty for Attach.
	Command []string
	Stdin   io.Reader
	Stdout  io.Writer
	Stderr  io.Writer
	// TTY asks for a terminal: its output is on Stdout only.
	TTY bool
	// Resize, when set with TTY, carries the terminal's sizes; the first
	// is best sent at once.
	Resize <-chan TerminalSize
}

// ExitError is a command that ran and exited non-zero, as client-go's
// exec.CodeExitError.
type ExitError struct {
	Code int
}

func (e *ExitError) Error() string {
	return fmt.Sprintf("command terminated with exit code %d", e.Code)
}

// ExitStatus is the command's exit code.
func (e *ExitError) ExitStatus() int { return e.Code }

// Exec runs opts.Command in a container (pods/exec) and returns when it
// ends: nil if it exited 0, an *ExitError for another code, an error saying
// why it could not run otherwise. Cancelling ctx ends the stream. Reading
// Stdin continues in the background until it returns, so a Stdin that
// never ends (a terminal) is left blocked when the command exits.
func (c *Client) Exec(ctx context.Context, opts ExecOptions) error {
	return c.remoteCommand(ctx, c.API.PodExec, opts)
}

// Attach attaches to a container's running process (pods/attach), as Exec.
func (c *Client) Attach(ctx context.Context, opts ExecOptions) error {
	opts.Command = nil
	return c.remoteCommand(ctx, c.API.PodAttach, opts)
}

type streamFrames = grpc.BidiStreamingClient[apipb.StreamFrame, apipb.StreamFrame]

func (c *Client) remoteCommand(ctx context.Context, open func(context.Context, ...grpc.CallOption) (streamFrames, error), opts ExecOptions) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, err := open(ctx)
	if err != nil {
		return err
	}
	// SendMsg is not safe for concurrent use: stdin and resize share it.
	var sendMu sync.Mutex
	send := func(f *apipb.StreamFrame) error {
		sendMu.Lock()
		defer sendMu.Unlock()
		return st.Send(f)
	}
	err = send(&apipb.StreamFrame{Kind: &apipb.StreamFrame_Start{Start: &apipb.ExecStart{
		Namespace: opts.Namespace, Name: opts.Name, Container: opts.Container, Command: opts.Command,
		Stdin: opts.Stdin != nil, Stdout: opts.Stdout != nil, Stderr: opts.Stderr != nil && !opts.TTY, Tty: opts.TTY,
	}}})
	if err != nil {
		return recvErr(st, err)
	}
	if opts.Stdin != nil {
		go func() {
			buf := make([]byte, 32<<10)
			for {
				n, err := opts.Stdin.Read(buf)
				if n > 0 {
					if send(&apipb.StreamFrame{Kind: &apipb.StreamFrame_Stdin{Stdin: append([]byte(nil), buf[:n]...)}}) != nil {
						return
					}
				}
				if err != nil {
					send(&apipb.StreamFrame{Kind: &apipb.StreamFrame_StdinClose{StdinClose: true}})
					return
				}
			}
		}()
	}
	if opts.TTY && opts.Resize != nil {
		go func() {
			for {
				select {
				case <-ctx.Done():
					return
				case sz, ok := <-opts.Resize:
					if !ok {
						return
					}
					if send(&apipb.StreamFrame{Kind: &apipb.StreamFrame_Resize{Resize: &apipb.TerminalSize{Width: uint32(sz.Width), Height: uint32(sz.Height)}}}) != nil {
						return
					}
				}
			}
		}()
	}
	for {
		f, err := st.Recv()
		if err != nil {
			if err == io.EOF {
				return errors.New("the stream ended before the command's exit status")
			}
			return err
		}
		switch k := f.GetKind().(type) {
		case *apipb.StreamFrame_Stdout:
			if opts.Stdout != nil {
				if _, err := opts.Stdout.Write(k.Stdout); err != nil {
					return err
				}
			}
		case *apipb.StreamFrame_Stderr:
			if opts.Stderr != nil {
				if _, err := opts.Stderr.Write(k.Stderr); err != nil {
					return err
				}
			}
		case *apipb.StreamFrame_Exit:
			switch code := k.Exit.GetCode(); {
			case code == 0:
				return nil
			case code > 0:
				return &ExitError{Code: int(code)}
			default:
				return errors.New(k.Exit.GetMessage())
			}
		}
	}
}

// recvErr is the server's reason for a stream a Send found broken: gRPC
// reports it on Recv only.
func recvErr[Req, Resp any](st grpc.BidiStreamingClient[Req, Resp], err error) error {
	if err != io.EOF {
		return err
	}
	for {
		if _, rerr := st.Recv(); rerr != nil {
			if rerr == io.EOF {
				return err
			}
			return rerr
		}
	}
}

// PortForward carries one connection to port of a pod (pods/portforward):
// conn's bytes to the port and the port's back, until either side closes.
// It returns nil when the pod's side closed, the pod's error text (an
// error dialing the port, say) as an error, or conn's read error.
func (c *Client) PortForward(ctx context.Context, namespace, name string, port int32, conn io.ReadWriter) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, err := c.API.PodPortForward(ctx)
	if err != nil {
		return err
	}
	if err := st.Send(&apipb.PortForwardFrame{Kind: &apipb.PortForwardFrame_Start{Start: &apipb.PortForwardStart{
		Namespace: namespace, Name: name, Port: port,
	}}}); err != nil {
		return recvErr(st, err)
	}
	go func() {
		buf := make([]byte, 32<<10)
		for {
			n, err := conn.Read(buf)
			if n > 0 {
				if st.Send(&apipb.PortForwardFrame{Kind: &apipb.PortForwardFrame_Data{Data: append([]byte(nil), buf[:n]...)}}) != nil {
					return
				}
			}
			if err != nil {
				st.Send(&apipb.PortForwardFrame{Kind: &apipb.PortForwardFrame_Close{Close: true}})
				st.CloseSend()
				return
			}
		}
	}()
	for {
		f, err := st.Recv()
		if err != nil {
			if err == io.EOF {
				return nil
			}
			return err
		}
		switch k := f.GetKind().(type) {
		case *apipb.PortForwardFrame_Data:
			if _, err := conn.Write(k.Data); err != nil {
				return err
			}
		case *apipb.PortForwardFrame_Error:
			return errors.New(k.Error)
		case *apipb.PortForwardFrame_Close:
			return nil
		}
	}
}
