// Package app assembles skiff-dns: CoreDNS's server with the plugins a
// cluster's Corefile uses and our skiff plugin in the place upstream's
// kubernetes plugin has, in upstream's order (plugin.cfg). It is what
// CoreDNS's own coredns.go and core/plugin do, with a list of our own: every
// other plugin stays out of the binary, and so does client-go.
package app

import (
	"fmt"
	"runtime"
	"runtime/debug"
	"strings"

	"github.com/coredns/coredns/core/dnsserver"

	// The plugins of Directives, and no others.
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/forward"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/loadbalance"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/loop"
	_ "github.com/coredns/coredns/plugin/metrics"
	_ "github.com/coredns/coredns/plugin/ready"
	_ "github.com/coredns/coredns/plugin/reload"

	"skiff.dev/dns/plugin/skiff"
)

// CoreDNSVersion is the CoreDNS release compiled in; coremain.CoreVersion
// says the same, but importing coremain also registers its flags, which
// only the binary wants.
const CoreDNSVersion = "1.15.0"

// Version is skiff-dns's own version, that of the Skiff release it ships
// with (the apiserver's).
const Version = "v1.37.0-skiff"

// Directives are the plugins a Corefile may use, in the order a query
// passes through them: upstream's plugin.cfg order, "skiff" where
// "kubernetes" is. The order is the server's, not the Corefile's.
var Directives = []string{
	"reload",
	"ready",
	"health",
	"prometheus",
	"errors",
	"log",
	"loadbalance",
	"cache",
	"skiff",
	"loop",
	"forward",
}

// Configure makes Directives the server's plugin chain; call it before
// the server starts (coremain.Run or caddy.Start).
func Configure() error {
	return dnsserver.SetDirectives(Directives)
}

// VersionString is what `skiff-dns -version` prints: ours, then CoreDNS's
// lines as `coredns -version` prints them.
func VersionString() string {
	var b strings.Builder
	fmt.Fprintf(&b, "skiff-dns %s (plugin %s, DNS schema %s)\n", Version, "skiff", skiff.DNSSchemaVersion)
	fmt.Fprintf(&b, "CoreDNS-%s\n", CoreDNSVersion)
	fmt.Fprintf(&b, "%s/%s, %s", runtime.GOOS, runtime.GOARCH, runtime.Version())
	if r := revision(); r != "" {
		fmt.Fprintf(&b, ", %s", r)
	}
	b.WriteString("\n")
	return b.String()
}

// revision is the VCS revision the binary was built from, when the build
// recorded one.
func revision() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" {
				return s.Value
			}
		}
	}
	return ""
}
