// Command skiff-apiserver serves Skiff's API over gRPC, with its objects in etcd.
package main

import (
	"fmt"
	"os"

	"skiff.dev/apiserver/app"
)

func main() {
	if err := app.NewCommand().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}
