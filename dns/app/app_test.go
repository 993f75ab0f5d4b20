package app_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/coredns/caddy"
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	"skiff.dev/dns/app"
)

// upstreamDirectives is CoreDNS's generated plugin.cfg order, read before
// any test lets app.Configure replace it.
var upstreamDirectives = slices.Clone(dnsserver.Directives)

func TestDirectivesKeepUpstreamOrder(t *testing.T) {
	if len(upstreamDirectives) < 50 || !slices.Contains(upstreamDirectives, "kubernetes") {
		t.Fatalf("dnsserver.Directives was already replaced: %v", upstreamDirectives)
	}
	// Each of ours where upstream has it, skiff in kubernetes's place.
	pos := func(d string) int {
		if d == "skiff" {
			d = "kubernetes"
		}
		return slices.Index(upstreamDirectives, d)
	}
	for i, d := range app.Directives {
		if pos(d) < 0 {
			t.Errorf("%s is not a directive of CoreDNS %s", d, app.CoreDNSVersion)
		}
		if i > 0 && pos(app.Directives[i-1]) >= pos(d) {
			t.Errorf("%s comes after %s, upstream has them the other way", app.Directives[i-1], d)
		}
	}
	// A cluster Corefile's plugins, and nothing else.
	want := []string{"errors", "health", "ready", "prometheus", "forward", "cache", "loop", "reload", "loadbalance", "log", "skiff"}
	got := slices.Clone(app.Directives)
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("directives %v, want %v", got, want)
	}

	if err := app.Configure(); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(dnsserver.Directives, app.Directives) {
		t.Errorf("Configure left the server with %v", dnsserver.Directives)
	}
	// Every directive has its plugin compiled in.
	registered := caddy.ListPlugins()["others"]
	for _, d := range app.Directives {
		if !slices.Contains(registered, "dns."+d) {
			t.Errorf("directive %s has no registered plugin (have %v)", d, registered)
		}
	}
}

func TestVersion(t *testing.T) {
	if app.CoreDNSVersion != coremain.CoreVersion {
		t.Errorf("app.CoreDNSVersion %s, but CoreDNS %s is compiled in", app.CoreDNSVersion, coremain.CoreVersion)
	}
	v := app.VersionString()
	for _, want := range []string{"skiff-dns " + app.Version, "CoreDNS-" + coremain.CoreVersion + "\n", "DNS schema 1.1.0", "linux/"} {
		if !strings.Contains(v, want) {
			t.Errorf("version %q lacks %q", v, want)
		}
	}
}
