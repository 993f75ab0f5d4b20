package pause

import (
	"errors"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"
)

// TestMain lets the test binary play `agnhost pause` in a child process.
func TestMain(m *testing.M) {
	if os.Getenv("AGNHOST_PAUSE_CHILD") == "1" {
		code, err := Main(nil)
		if err != nil {
			os.Exit(100)
		}
		os.Exit(code)
	}
	os.Exit(m.Run())
}

func TestExitsWithUpstreamCodes(t *testing.T) {
	for sig, want := range map[syscall.Signal]int{syscall.SIGTERM: 2, syscall.SIGINT: 1} {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), "AGNHOST_PAUSE_CHILD=1")
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		// "Paused" is printed once the signal handler is installed.
		buf := make([]byte, 7)
		if _, err := out.Read(buf); err != nil || string(buf[:6]) != "Paused" {
			t.Fatalf("child printed %q, %v", buf, err)
		}
		cmd.Process.Signal(sig)
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case err = <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			t.Fatalf("pause ignored %v", sig)
		}
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() != want {
			t.Errorf("after %v: %v, want exit code %d", sig, err, want)
		}
	}
}
