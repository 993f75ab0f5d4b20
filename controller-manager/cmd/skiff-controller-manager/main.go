// Command skiff-controller-manager runs the cluster's controllers.
package main

import (
	"fmt"
	"os"

	"skiff.dev/controller-manager/app"
)

func main() {
	if err := app.NewCommand().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}
