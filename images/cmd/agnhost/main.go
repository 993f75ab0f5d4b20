// Command agnhost is Skiff's own implementation of upstream's agnhost test
// image: one binary whose subcommands are the servers e2e tests run in pods.
package main

import (
	"errors"
	"flag"
	"fmt"
	"log"
	"os"

	"skiff.dev/images/internal/agnhost/bench"
	"skiff.dev/images/internal/agnhost/liveness"
	"skiff.dev/images/internal/agnhost/netexec"
	"skiff.dev/images/internal/agnhost/pause"
	"skiff.dev/images/internal/agnhost/resourceconsumer"
	"skiff.dev/images/internal/agnhost/servehostname"
)

const usage = `agnhost: a test server for Kubernetes e2e tests.

Usage: agnhost <subcommand> [flags]

Subcommands:
  netexec         HTTP and UDP servers with /hostname, /echo, /clientip, /shell, /dial, /exit, /healthz ...
  serve-hostname  serves the hostname over HTTP, TCP or UDP (--port 9376)
  pause           sleeps until SIGINT or SIGTERM
  liveness        /healthz answers 200 for 10 s, then 500
  resource-consumer  POST /ConsumeCPU?millicores=&durationSec=, /ConsumeMem?megabytes=&durationSec=, /GetCurrentStatus (--port 8080)
  bench-http      HTTP load at pod IPs and at their ClusterIP in turns; prints one JSON line
                  (--direct BODY=URL ... --service URL --conn keepalive|newconn; not upstream's)
  bench-dns       the same for DNS A queries (--direct IP --service IP --name N --want-a IP)
`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(1)
	}
	var err error
	code := 0
	switch cmd, args := os.Args[1], os.Args[2:]; cmd {
	case "netexec":
		err = netexec.Main(args)
	case "serve-hostname":
		err = servehostname.Main(args)
	case "pause":
		code, err = pause.Main(args)
	case "liveness":
		err = liveness.Main(args)
	case "resource-consumer":
		err = resourceconsumer.Main(args)
	case "bench-http":
		err = bench.HTTPMain(args)
	case "bench-dns":
		err = bench.DNSMain(args)
	case "-h", "--help", "help":
		fmt.Print(usage)
	default:
		fmt.Fprintf(os.Stderr, "agnhost: unknown subcommand %q\n\n%s", cmd, usage)
		os.Exit(1)
	}
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		log.Fatalf("agnhost %s: %v", os.Args[1], err)
	}
	os.Exit(code)
}
