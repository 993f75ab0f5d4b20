// Package pause is agnhost's pause subcommand: it keeps a container running
// until it is signalled, so tests can exec into it.
package pause

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

// ExitCode is upstream's exit status for each signal pause stops on:
// SIGINT 1, SIGTERM 2.
func ExitCode(sig os.Signal) int {
	if sig == syscall.SIGINT {
		return 1
	}
	return 2
}

// Main runs `agnhost pause`; it returns the process's exit code.
func Main(args []string) (int, error) {
	fs := flag.NewFlagSet("pause", flag.ContinueOnError)
	if err := fs.Parse(args); err != nil {
		return 2, err
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	fmt.Println("Paused")
	code := ExitCode(<-sigs)
	fmt.Printf("exiting %d\n", code)
	return code, nil
}
