// Command skiff-kubelet is the node agent: it registers its node and runs
// the node's pods on containerd through the CRI.
package main

import (
	"fmt"
	"os"

	"skiff.dev/kubelet/app"
)

func main() {
	if err := app.NewCommand().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}
