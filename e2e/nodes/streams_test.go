package nodes

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/creack/pty"
	"golang.org/x/sys/unix"

	"skiff.dev/client"
	"skiff.dev/ctl/app"
	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
	"skiff.dev/proto/apierrors"
)

// TestStreamsThroughSkiffctl runs an agnhost pod on a real node and reads
// its log, runs commands in it, copies files in and out and forwards a port
// to it, every one through skiffctl → apiserver → kubelet → containerd.
func TestStreamsThroughSkiffctl(t *testing.T) {
	c, cl := kubeletClusterN(t, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	pods := client.For[*corev1.Pod](cl, "default")
	pod := &corev1.Pod{Metadata: &metav1.ObjectMeta{Name: "streams"}, Spec: &corev1.PodSpec{Containers: []*corev1.Container{agnhost("web")}}}
	if _, err := pods.Create(ctx, pod); err != nil {
		t.Fatal(err)
	}
	eventually(t, 60*time.Second, "the pod is ready", func() (bool, string) {
		p, err := pods.Get(ctx, "streams")
		if err != nil {
			return false, err.Error()
		}
		return condition(p, "Ready") == "True", p.GetStatus().String()
	})
	skiffctl := func(stdin string, args ...string) (string, string, int) {
		var out, errb bytes.Buffer
		code := app.Run(ctx, app.Streams{In: strings.NewReader(stdin), Out: &out, Err: &errb}, append([]string{"--kubeconfig", c.Kubeconfig()}, args...))
		return out.String(), errb.String(), code
	}

	t.Run("logs", func(t *testing.T) {
		out, errOut, code := skiffctl("", "logs", "streams")
		if code != 0 || !strings.Contains(out, "Started HTTP server on port 8080") {
			t.Errorf("logs: %d %q %q", code, out, errOut)
		}
	})

	t.Run("exec", func(t *testing.T) {
		out, errOut, code := skiffctl("", "exec", "streams", "--", "sh", "-c", "echo hi; echo oops >&2")
		if code != 0 || out != "hi\n" || errOut != "oops\n" {
			t.Errorf("exec echo: %d %q %q", code, out, errOut)
		}
		out, errOut, code = skiffctl("", "exec", "streams", "--", "sh", "-c", "exit 3")
		if code != 3 || out != "" || errOut != "command terminated with exit code 3\n" {
			t.Errorf("exec exit 3: %d %q %q", code, out, errOut)
		}
		// echo hello | skiffctl exec -i streams -- cat: the end of skiffctl's
		// stdin closes the command's, so cat ends.
		// A cat left waiting is cut off by the deadline and fails.
		catCtx, catCancel := context.WithTimeout(ctx, 10*time.Second)
		var catOut, catErr bytes.Buffer
		code = app.Run(catCtx, app.Streams{In: strings.NewReader("hello\n"), Out: &catOut, Err: &catErr},
			[]string{"--kubeconfig", c.Kubeconfig(), "exec", "-i", "streams", "--", "cat"})
		late := catCtx.Err()
		catCancel()
		if code != 0 || catOut.String() != "hello\n" || late != nil {
			t.Errorf("echo hello | exec -i cat: %d %q %q (%v)", code, catOut.String(), catErr.String(), late)
		}
		out, errOut, code = skiffctl("", "exec", "streams", "--", "/no/such/binary")
		if code != 1 || !strings.Contains(errOut, "no/such/binary") {
			t.Errorf("exec of a missing binary: %d %q %q", code, out, errOut)
		}
		out, errOut, code = skiffctl("", "exec", "streams", "-c", "nope", "--", "true")
		if code != 1 || !strings.Contains(errOut, "container nope is not valid for pod streams") {
			t.Errorf("exec -c nope: %d %q %q", code, out, errOut)
		}
	})

	t.Run("run and attach", func(t *testing.T) {
		// run -i --rm --restart=Never: the command's output and exit code,
		// and the pod gone afterwards. The output waits for the end of
		// stdin, which only an attached skiffctl closes: written before the
		// attach, it would be lost (kubectl's race as well).
		out, errOut, code := skiffctl("", "run", "once", "-i", "--rm", "--restart=Never", "--image="+busyboxImage, "--", "sh", "-c", "cat; echo from-run; exit 4")
		if code != 4 || !strings.Contains(out, "from-run") {
			t.Errorf("run -i --rm: %d %q %q", code, out, errOut)
		}
		eventually(t, 30*time.Second, "the --rm pod deleted", func() (bool, string) {
			_, err := pods.Get(ctx, "once")
			return apierrors.IsNotFound(err), fmt.Sprint(err)
		})
		// attach to a running container's main process: its output streams.
		if _, errOut, code := skiffctl("", "run", "ticker", "--image="+busyboxImage, "--", "sh", "-c", "while true; do echo tick; sleep 0.2; done"); code != 0 {
			t.Fatalf("run ticker: %d %q", code, errOut)
		}
		eventually(t, 60*time.Second, "ticker running", func() (bool, string) {
			p, err := pods.Get(ctx, "ticker")
			return err == nil && p.GetStatus().GetPhase() == "Running", fmt.Sprint(err)
		})
		attachCtx, attachCancel := context.WithTimeout(ctx, 2*time.Second)
		var aOut, aErr bytes.Buffer
		app.Run(attachCtx, app.Streams{In: strings.NewReader(""), Out: &aOut, Err: &aErr}, []string{"--kubeconfig", c.Kubeconfig(), "attach", "ticker"})
		attachCancel()
		if !strings.Contains(aOut.String(), "tick\ntick\n") {
			t.Errorf("attach ticker: %q %q", aOut.String(), aErr.String())
		}
	})

	t.Run("cp", func(t *testing.T) {
		dir := t.TempDir()
		src := filepath.Join(dir, "in")
		os.MkdirAll(filepath.Join(src, "sub"), 0o755)
		os.WriteFile(filepath.Join(src, "sub", "f.txt"), []byte("copied\n"), 0o644)
		if out, errOut, code := skiffctl("", "cp", src, "streams:/tmp/data"); code != 0 {
			t.Fatalf("cp in: %d %q %q", code, out, errOut)
		}
		if out, errOut, code := skiffctl("", "exec", "streams", "--", "cat", "/tmp/data/sub/f.txt"); code != 0 || out != "copied\n" {
			t.Errorf("the copied file in the pod: %d %q %q", code, out, errOut)
		}
		back := filepath.Join(dir, "back")
		if out, errOut, code := skiffctl("", "cp", "default/streams:/tmp/data", back); code != 0 {
			t.Fatalf("cp out: %d %q %q", code, out, errOut)
		}
		if b, err := os.ReadFile(filepath.Join(back, "sub", "f.txt")); err != nil || string(b) != "copied\n" {
			t.Errorf("copied back: %q, %v", b, err)
		}
	})

	t.Run("port-forward", func(t *testing.T) {
		pctx, stop := context.WithCancel(ctx)
		defer stop()
		pr, pw := io.Pipe()
		done := make(chan int, 1)
		go func() {
			code := app.Run(pctx, app.Streams{In: strings.NewReader(""), Out: pw, Err: os.Stderr},
				[]string{"--kubeconfig", c.Kubeconfig(), "port-forward", "pod/streams", ":8080"})
			pw.Close()
			done <- code
		}()
		line, err := bufio.NewReader(pr).ReadString('\n')
		go io.Copy(io.Discard, pr)
		m := regexp.MustCompile(`^Forwarding from (127\.0\.0\.1:\d+) -> 8080\n$`).FindStringSubmatch(line)
		if err != nil || m == nil {
			t.Fatalf("port-forward printed %q (%v)", line, err)
		}
		hc := &http.Client{Timeout: 10 * time.Second}
		for i := 0; i < 2; i++ { // one stream per connection: a second works as the first
			resp, err := hc.Get("http://" + m[1] + "/hostname")
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if string(b) != "streams" {
				t.Errorf("GET /hostname through the forward: %q", b)
			}
			hc.CloseIdleConnections()
		}
		stop()
		if code := <-done; code != 0 {
			t.Errorf("port-forward exited %d after Ctrl-C", code)
		}
	})
}

// TestStreamsTTYThroughSkiffctl runs the skiffctl binary on a
// pseudo-terminal, as a user at a terminal runs it, for exec -it and
// run -it: the remote side gets a terminal of the local one's size and
// follows its resizes, the local terminal is raw while the session runs and
// restored after, Ctrl-C and Ctrl-D reach the remote shell, and the remote
// exit code is skiffctl's.
func TestStreamsTTYThroughSkiffctl(t *testing.T) {
	c, cl := kubeletClusterN(t, 1)
	skiffctl, _ := filepath.Abs("../../bin/skiffctl")
	if _, err := os.Stat(skiffctl); err != nil {
		t.Fatalf("%s is missing: run `make build` first", skiffctl)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	pods := client.For[*corev1.Pod](cl, "default")
	pod := &corev1.Pod{Metadata: &metav1.ObjectMeta{Name: "tty"}, Spec: &corev1.PodSpec{
		Containers: []*corev1.Container{{Name: "sh", Image: busyboxImage, Command: []string{"sleep", "3600"}}}}}
	if _, err := pods.Create(ctx, pod); err != nil {
		t.Fatal(err)
	}
	eventually(t, 60*time.Second, "the pod is running", func() (bool, string) {
		p, err := pods.Get(ctx, "tty")
		return err == nil && p.GetStatus().GetPhase() == "Running", fmt.Sprint(err)
	})
	kubeconfig := "--kubeconfig=" + c.Kubeconfig()

	t.Run("exec -it sh", func(t *testing.T) {
		s := startPTY(t, 40, 120, skiffctl, kubeconfig, "exec", "-it", "tty", "--", "sh")
		s.waitRaw()
		// Typed ahead of the shell, a line is echoed twice, by the remote
		// terminal and by the shell's line editing, as over ssh: wait for
		// the prompt.
		s.expect("# ", 20*time.Second)
		// The $((…)) tells the command's output from the echo of the line
		// typed: only the shell expands it.
		s.typeLine(`echo "$((6*7))ready"`)
		s.expect("42ready", 20*time.Second)
		// A terminal not put in raw mode echoes the line itself, before
		// the remote terminal does.
		if n := strings.Count(s.output(), `echo "$((6*7))ready"`); n != 1 {
			t.Errorf("the typed line was echoed %d times, want once (by the remote terminal): %q", n, s.output())
		}
		s.typeLine(`tty; [ -t 0 ] && echo "$((1+1))isatty"`)
		s.expect("2isatty", 20*time.Second)
		if !regexp.MustCompile(`/dev/pts/\d+`).MatchString(s.output()) {
			t.Errorf("tty printed no /dev/pts path: %q", s.output())
		}
		s.typeLine(`stty size; echo "$((2+2))sized"`)
		if out := s.expect("4sized", 20*time.Second); !strings.Contains(out, "40 120") {
			t.Errorf("stty size in a 40x120 terminal: %q", out)
		}

		// The kernel sends skiffctl SIGWINCH on a resize.
		s.resize(50, 100)
		s.waitSize("50 100")

		// A window dragged larger sends a burst of SIGWINCH: the last size
		// is the one that must arrive.
		for i := uint16(0); i < 30; i++ {
			s.resize(20+i, 60+i)
		}
		s.resize(45, 110)
		s.waitSize("45 110")

		// Ctrl-C is a byte for the remote terminal, which interrupts its
		// foreground command; skiffctl goes on.
		s.typeLine("sleep 60")
		time.Sleep(500 * time.Millisecond)
		s.write("\x03")
		s.typeLine(`echo "$((3*3))alive"`)
		s.expect("9alive", 10*time.Second)

		s.typeLine("exit 3")
		if code := s.wait(20 * time.Second); code != 3 {
			t.Errorf("skiffctl exited %d after exit 3, want 3: %q", code, s.output())
		}
		s.expect("command terminated with exit code 3", time.Second)
		s.checkRestored()
	})

	t.Run("exec -it sh, Ctrl-D", func(t *testing.T) {
		s := startPTY(t, 24, 80, skiffctl, kubeconfig, "exec", "-it", "tty", "--", "sh")
		s.waitRaw()
		s.typeLine(`echo "$((6*7))ready"`)
		s.expect("42ready", 20*time.Second)
		// Ctrl-D at an empty prompt is the remote shell's end of input.
		s.write("\x04")
		if code := s.wait(20 * time.Second); code != 0 {
			t.Errorf("skiffctl exited %d after Ctrl-D, want 0: %q", code, s.output())
		}
		s.checkRestored()
	})

	t.Run("exec -it, a command with no prompt", func(t *testing.T) {
		// No SIGWINCH comes here: the size the remote terminal has is the
		// one skiffctl sent first. containerd 1.6 starts the process before
		// it applies any resize (the CRI's ExecRequest carries no size,
		// kubernetes#47990), so a command that reads its size at once sees
		// 0x0, with kubectl as with skiffctl: give the first resize a moment.
		s := startPTY(t, 33, 77, skiffctl, kubeconfig, "exec", "-it", "tty", "--", "sh", "-c", "sleep 1; stty size")
		if code := s.wait(20 * time.Second); code != 0 {
			t.Errorf("skiffctl exited %d: %q", code, s.output())
		}
		if !strings.Contains(s.output(), "33 77") {
			t.Errorf("stty size as the command, in a 33x77 terminal: %q", s.output())
		}
		s.checkRestored()
	})

	t.Run("exec -it fails after raw mode", func(t *testing.T) {
		// The apiserver refuses the container once the terminal is raw.
		s := startPTY(t, 24, 80, skiffctl, kubeconfig, "exec", "-it", "tty", "-c", "nope", "--", "sh")
		if code := s.wait(20 * time.Second); code != 1 {
			t.Errorf("skiffctl exited %d, want 1: %q", code, s.output())
		}
		s.expect("container nope is not valid for pod tty", time.Second)
		s.checkRestored()
	})

	// kubectl restores the terminal on every signal that ends it; with
	// the terminal raw none comes from the keyboard, but from kill, a
	// closed window (SIGHUP) or a timeout(1).
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT, syscall.SIGINT} {
		t.Run("exec -it, "+unix.SignalName(sig), func(t *testing.T) {
			s := startPTY(t, 24, 80, skiffctl, kubeconfig, "exec", "-it", "tty", "--", "sh")
			s.waitRaw()
			s.expect("# ", 20*time.Second)
			s.cmd.Process.Signal(sig)
			// Cut short is not a success: kubectl exits 1.
			if code := s.wait(20 * time.Second); code != 1 {
				t.Errorf("skiffctl exited %d on %v, want 1: %q", code, sig, s.output())
			}
			s.checkRestored()
		})
	}

	t.Run("run -it --rm", func(t *testing.T) {
		s := startPTY(t, 40, 120, skiffctl, kubeconfig, "run", "ttyrun", "-it", "--rm", "--restart=Never", "--image="+busyboxImage, "--", "sh")
		s.waitRaw()
		s.expect("If you don't see a command prompt, try pressing enter.", 5*time.Second)
		s.typeLine(`stty size; echo "$((2+2))sized"`)
		if out := s.expect("4sized", 20*time.Second); !strings.Contains(out, "40 120") {
			t.Errorf("stty size in a 40x120 terminal: %q", out)
		}
		s.resize(30, 90)
		s.waitSize("30 90")
		s.typeLine("exit 5")
		if code := s.wait(60 * time.Second); code != 5 {
			t.Errorf("skiffctl exited %d after exit 5, want 5: %q", code, s.output())
		}
		s.expect(`pod "ttyrun" deleted`, time.Second)
		s.checkRestored()
		eventually(t, 30*time.Second, "the --rm pod deleted", func() (bool, string) {
			_, err := pods.Get(ctx, "ttyrun")
			return apierrors.IsNotFound(err), fmt.Sprint(err)
		})
	})
}

// ptySession is a process whose stdin, stdout, stderr and controlling
// terminal are a pseudo-terminal: resizing it sends the process SIGWINCH.
type ptySession struct {
	t    *testing.T
	cmd  *exec.Cmd
	ptmx *os.File // the master: what the user types and sees
	// The terminal side stays open here, so its modes can be read after
	// the process exits.
	tty    *os.File
	before *unix.Termios

	mu   sync.Mutex
	out  bytes.Buffer
	mark int // where expect looks from
	seq  int // numbers waitSize's questions

	exited chan struct{}
	state  *os.ProcessState
}

func startPTY(t *testing.T, rows, cols uint16, name string, args ...string) *ptySession {
	t.Helper()
	ptmx, tty, err := pty.Open()
	if err != nil {
		t.Fatal(err)
	}
	s := &ptySession{t: t, ptmx: ptmx, tty: tty, exited: make(chan struct{})}
	if err := pty.Setsize(ptmx, &pty.Winsize{Rows: rows, Cols: cols}); err != nil {
		t.Fatal(err)
	}
	if s.before, err = unix.IoctlGetTermios(int(tty.Fd()), unix.TCGETS); err != nil {
		t.Fatal(err)
	}
	if s.before.Lflag&(unix.ICANON|unix.ECHO) != unix.ICANON|unix.ECHO {
		t.Fatalf("a new pty is not in cooked mode: lflag %#x", s.before.Lflag)
	}
	s.cmd = exec.Command(name, args...)
	s.cmd.Stdin, s.cmd.Stdout, s.cmd.Stderr = tty, tty, tty
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true}
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := ptmx.Read(buf)
			s.mu.Lock()
			s.out.Write(buf[:n])
			s.mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	go func() {
		s.cmd.Wait()
		s.state = s.cmd.ProcessState
		close(s.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-s.exited:
		default:
			s.cmd.Process.Kill()
			<-s.exited
		}
		// The last terminal-side close ends the reader with EIO.
		tty.Close()
		ptmx.Close()
		t.Logf("%s output:\n%s", filepath.Base(name), s.output())
	})
	return s
}

func (s *ptySession) output() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.out.String()
}

func (s *ptySession) write(text string) {
	s.t.Helper()
	if _, err := s.ptmx.Write([]byte(text)); err != nil {
		s.t.Fatal(err)
	}
}

// typeLine types a line and Enter, which a terminal sends as CR.
func (s *ptySession) typeLine(line string) { s.t.Helper(); s.write(line + "\r") }

// expect waits up to d for want in the output after the last match and
// returns the output up to and including it.
func (s *ptySession) expect(want string, d time.Duration) string {
	s.t.Helper()
	deadline := time.Now().Add(d)
	for {
		s.mu.Lock()
		rest := s.out.String()[s.mark:]
		i := strings.Index(rest, want)
		if i >= 0 {
			s.mark += i + len(want)
		}
		s.mu.Unlock()
		if i >= 0 {
			return rest[:i+len(want)]
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("%q not in the output after %s: %q", want, d, rest)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (s *ptySession) resize(rows, cols uint16) {
	s.t.Helper()
	if err := pty.Setsize(s.ptmx, &pty.Winsize{Rows: rows, Cols: cols}); err != nil {
		s.t.Fatal(err)
	}
}

// waitSize asks the remote shell for its terminal's size until it is
// want ("rows cols"). A resize travels apart from stdin (on a stream of its
// own from the apiserver on), so the line typed after it may overtake it.
func (s *ptySession) waitSize(want string) {
	s.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		s.seq++
		s.typeLine(fmt.Sprintf(`stty size; echo "$((%d+1000))sized"`, s.seq))
		out := s.expect(fmt.Sprintf("%dsized", s.seq+1000), 20*time.Second)
		if strings.Contains(out, "\n"+want+"\r") {
			return
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("stty size after resizing to %s: %q", want, out)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

func (s *ptySession) termios() *unix.Termios {
	s.t.Helper()
	tio, err := unix.IoctlGetTermios(int(s.tty.Fd()), unix.TCGETS)
	if err != nil {
		s.t.Fatal(err)
	}
	return tio
}

// waitRaw waits for the process to put the terminal in raw mode: no line
// editing, no echo, no signals from Ctrl-C, output passed as written.
func (s *ptySession) waitRaw() {
	s.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		tio := s.termios()
		if tio.Lflag&(unix.ICANON|unix.ECHO|unix.ISIG) == 0 && tio.Oflag&unix.OPOST == 0 {
			return
		}
		select {
		case <-s.exited:
			s.t.Fatalf("exited (%v) without putting the terminal in raw mode: %q", s.state, s.output())
		default:
		}
		if time.Now().After(deadline) {
			// Not raw yet, Go's SIGQUIT prints where every goroutine is.
			s.cmd.Process.Signal(syscall.SIGQUIT)
			select {
			case <-s.exited:
			case <-time.After(5 * time.Second):
			}
			s.t.Fatalf("the terminal is not raw after 60s: lflag %#x oflag %#x: %q", tio.Lflag, tio.Oflag, s.output())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// wait waits up to d for the process to exit and returns its exit code.
func (s *ptySession) wait(d time.Duration) int {
	s.t.Helper()
	select {
	case <-s.exited:
		return s.state.ExitCode()
	case <-time.After(d):
		s.t.Fatalf("still running after %s: %q", d, s.output())
		return -1
	}
}

// checkRestored checks the process left the terminal's modes as it found
// them.
func (s *ptySession) checkRestored() {
	s.t.Helper()
	after := s.termios()
	if after.Iflag != s.before.Iflag || after.Oflag != s.before.Oflag || after.Cflag != s.before.Cflag ||
		after.Lflag != s.before.Lflag || after.Cc != s.before.Cc {
		s.t.Errorf("terminal modes not restored: before %+v, after %+v", *s.before, *after)
	}
}
