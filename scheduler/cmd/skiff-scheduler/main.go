// Command skiff-scheduler assigns pending pods to nodes.
package main

import (
	"fmt"
	"os"

	"skiff.dev/scheduler/app"
)

func main() {
	if err := app.NewCommand().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}
