// Command pause is the sandbox container of every pod: it holds the pod's
// namespaces open, and as their PID 1 reaps the zombies that processes
// exec'd into the pod leave behind, as upstream's pause.c does.
package main

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

const version = "3.10"

func main() {
	if len(os.Args) > 1 && (os.Args[1] == "-v" || os.Args[1] == "--version") {
		fmt.Printf("pause.go %s\n", version)
		return
	}
	if os.Getpid() != 1 {
		fmt.Fprintln(os.Stderr, "Warning: pause should be the first process")
	}
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	os.Exit(run(sigs))
}

// run blocks until SIGINT or SIGTERM, reaping children on every SIGCHLD, and
// returns the exit code (0, as pause.c's sigdown).
func run(sigs <-chan os.Signal) int {
	for sig := range sigs {
		if sig == syscall.SIGCHLD {
			reap()
			continue
		}
		fmt.Fprintf(os.Stderr, "Shutting down, got signal: %v\n", sig)
		return 0
	}
	return 0
}

// reap collects every exited child; signals coalesce, so one SIGCHLD may
// stand for several.
func reap() (n int) {
	for {
		var ws syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
		if err == syscall.EINTR {
			continue
		}
		if pid <= 0 || err != nil {
			return n
		}
		n++
	}
}
