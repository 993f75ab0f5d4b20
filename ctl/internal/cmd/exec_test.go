package cmd

import (
	"context"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/creack/pty"
	"golang.org/x/sys/unix"

	"skiff.dev/client"
)

func TestFollowSizesKeepsTheNewest(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sizes := make(chan client.TerminalSize, 10)
	for _, sz := range []client.TerminalSize{{Width: 80, Height: 24}, {Width: 90, Height: 30}, {Width: 100, Height: 40}, {Width: 100, Height: 40}, {Width: 120, Height: 50}} {
		sizes <- sz
	}
	// Unbuffered: a tick is taken only once the one before it was sent.
	tick := make(chan os.Signal)
	ch := followSizes(ctx, tick, func() (client.TerminalSize, bool) { return <-sizes, true })
	// The stream takes nothing while the window is dragged: 80x24 is
	// still waiting when 90x30 and 100x40 come.
	tick <- syscall.SIGWINCH
	tick <- syscall.SIGWINCH
	tick <- syscall.SIGWINCH // sends 100x40 again once the first is in
	if got := recvSize(t, ch); got != (client.TerminalSize{Width: 100, Height: 40}) {
		t.Errorf("after a burst of resizes the stream got %v, want the last, 100x40", got)
	}
	tick <- syscall.SIGWINCH
	if got := recvSize(t, ch); got != (client.TerminalSize{Width: 120, Height: 50}) {
		t.Errorf("a later resize: %v, want 120x50", got)
	}
}

func TestFollowSizesSkipsUnknownSizes(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ok := false
	tick := make(chan os.Signal)
	ch := followSizes(ctx, tick, func() (client.TerminalSize, bool) { return client.TerminalSize{Width: 1, Height: 1}, ok })
	select {
	case sz := <-ch:
		t.Fatalf("a size that could not be read was sent: %v", sz)
	case <-time.After(50 * time.Millisecond):
	}
	cancel()
}

func recvSize(t *testing.T, ch <-chan client.TerminalSize) client.TerminalSize {
	t.Helper()
	select {
	case sz := <-ch:
		return sz
	case <-time.After(5 * time.Second):
		t.Fatal("no size sent")
		return client.TerminalSize{}
	}
}

// TestRawRestoresOnSignals: SIGHUP and SIGQUIT, which Main's context does
// not catch, end a raw session instead of the process, and restore puts the
// terminal back as it was.
func TestRawRestoresOnSignals(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGHUP, syscall.SIGQUIT} {
		t.Run(unix.SignalName(sig), func(t *testing.T) {
			ptmx, tty, err := pty.Open()
			if err != nil {
				t.Skipf("no pseudo-terminal: %v", err)
			}
			defer ptmx.Close()
			defer tty.Close()
			before, err := unix.IoctlGetTermios(int(tty.Fd()), unix.TCGETS)
			if err != nil {
				t.Fatal(err)
			}
			term := &terminal{in: tty}
			ctx, err := term.raw(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			raw, _ := unix.IoctlGetTermios(int(tty.Fd()), unix.TCGETS)
			if raw.Lflag&(unix.ICANON|unix.ECHO) != 0 {
				t.Errorf("not raw: lflag %#x", raw.Lflag)
			}
			// Caught by raw's handler; without it the test binary dies.
			syscall.Kill(os.Getpid(), sig)
			select {
			case <-ctx.Done():
			case <-time.After(5 * time.Second):
				t.Fatalf("%v did not end the session", sig)
			}
			term.restore()
			term.restore()
			after, _ := unix.IoctlGetTermios(int(tty.Fd()), unix.TCGETS)
			if *after != *before {
				t.Errorf("terminal not restored: before %+v, after %+v", *before, *after)
			}
		})
	}
}
