// Command skiffctl is Skiff's kubectl.
package main

import (
	"os"

	"skiff.dev/ctl/internal/cmd"
)

func main() {
	os.Exit(cmd.Main(cmd.Streams{In: os.Stdin, Out: os.Stdout, Err: os.Stderr}, os.Args[1:], nil))
}
