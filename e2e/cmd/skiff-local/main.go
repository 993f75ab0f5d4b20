// Command skiff-local runs a Skiff cluster on this machine from the built
// binaries: `skiff-local up --dir DIR [--nodes N] [--detach]`,
// `skiff-local down --dir DIR`.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/spf13/cobra"

	"skiff.dev/e2e/local"
)

func main() {
	if err := newCommand().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}

func newCommand() *cobra.Command {
	root := &cobra.Command{Use: "skiff-local", Short: "Run a local Skiff cluster", SilenceUsage: true, SilenceErrors: true}
	var o local.Options
	var detach bool
	self, _ := os.Executable()
	up := &cobra.Command{
		Use:   "up --dir DIR",
		Short: "Start the control plane and the nodes and wait until they are ready",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer cancel()
			o.Log = os.Stdout
			c, err := local.Up(ctx, o)
			if err != nil {
				return err
			}
			fmt.Printf("\nSkiff is running. Logs are in %s.\n\n  export SKIFFCONFIG=%s\n  skiffctl get ns\n\n", filepath.Join(c.Dir, "logs"), c.Kubeconfig())
			if detach {
				fmt.Printf("Stop it with: skiff-local down --dir %s\n", c.Dir)
				return nil
			}
			fmt.Println("Press Ctrl-C to stop.")
			if err := c.Supervise(); err != nil {
				return err
			}
			err = c.Wait(ctx)
			fmt.Println("stopping…")
			if derr := c.Down(); derr != nil && err == nil {
				err = derr
			}
			return err
		},
	}
	up.Flags().StringVar(&o.Dir, "dir", "", "Directory for the cluster's data, logs and admin.conf.")
	up.Flags().StringVar(&o.BinDir, "bin", filepath.Dir(self), "Directory of the skiff-* binaries.")
	up.Flags().IntVar(&o.Port, "port", 6443, "The apiserver's secure port (0 picks a free one).")
	up.Flags().IntVar(&o.Nodes, "nodes", 1, "How many nodes to start (skiff-node-1 … N), each in namespaces of its own with containerd and a kubelet; 0 for the control plane alone.")
	up.Flags().BoolVar(&detach, "detach", false, "Return once ready and leave the cluster running.")
	var downDir string
	down := &cobra.Command{
		Use:   "down --dir DIR",
		Short: "Stop the cluster started in DIR",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			return local.Down(downDir)
		},
	}
	down.Flags().StringVar(&downDir, "dir", "", "Directory given to up.")
	root.AddCommand(up, down)
	return root
}
