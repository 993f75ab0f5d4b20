// Command skiff-dns is Skiff's cluster DNS: CoreDNS with the skiff plugin
// (see skiff.dev/dns/app). It takes CoreDNS's flags (-conf Corefile,
// -dns.port, -plugins, -quiet, -log-format, -pidfile) and runs as CoreDNS
// does; -version prints our version before CoreDNS's.
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/coredns/coredns/coremain"

	"skiff.dev/dns/app"
)

func main() {
	if err := app.Configure(); err != nil {
		fmt.Fprintln(os.Stderr, "skiff-dns:", err)
		os.Exit(1)
	}
	// coremain registered its flags on the default set when it was
	// imported; parsing them first lets -version print ours, and
	// coremain.Run parses the same arguments again.
	flag.Parse()
	if v := flag.Lookup("version"); v != nil && v.Value.String() == "true" {
		fmt.Print(app.VersionString())
		return
	}
	coremain.Run()
}
