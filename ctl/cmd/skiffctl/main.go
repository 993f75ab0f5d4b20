// Command skiffctl is Skiff's kubectl.
package main

import (
	"os"

	"skiff.dev/ctl/app"
)

func main() {
	os.Exit(app.Main(app.Streams{In: os.Stdin, Out: os.Stdout, Err: os.Stderr}, os.Args[1:]))
}
