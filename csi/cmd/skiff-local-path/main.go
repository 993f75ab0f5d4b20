// Command skiff-local-path is the node plugin of the local-path.skiff.dev
// CSI driver: node-local directories as PersistentVolumes.
package main

import (
	"fmt"
	"os"

	"github.com/spf13/pflag"

	"skiff.dev/client/component"
	"skiff.dev/csi/internal/app"
)

func main() {
	o := app.NewOptions()
	fs := pflag.NewFlagSet("skiff-local-path", pflag.ExitOnError)
	o.AddFlags(fs)
	_ = fs.Parse(os.Args[1:])
	log, err := component.NewLogger(os.Stderr, o.LogFormat, o.Verbosity)
	if err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
	ctx, cancel := component.SignalContext()
	defer cancel()
	if err := app.Run(ctx, o, log); err != nil {
		log.Error("skiff-local-path exits", "err", err)
		cancel()
		os.Exit(1)
	}
}
