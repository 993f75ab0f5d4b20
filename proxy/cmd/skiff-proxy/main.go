// Command skiff-proxy programs a node's Service dataplane.
package main

import (
	"fmt"
	"os"

	"skiff.dev/proxy/app"
)

func main() {
	if err := app.NewCommand().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}
