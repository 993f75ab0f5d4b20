package manager

import (
	"fmt"
	"slices"
	"sort"
	"strings"
)

// A known controller: its canonical name (upstream's names package since
// 1.28), the short alias --controllers has always accepted, and whether it
// runs under "*".
type known struct {
	name, alias string
	disabled    bool
}

// upstreamControllers lists every name kube-controller-manager accepts, so a
// flag copied from an upstream manifest is understood even where Skiff has
// no such controller yet (it is then reported, not silently dropped).
var upstreamControllers = []known{
	{name: "attachdetach-controller", alias: "attachdetach"},
	{name: "bootstrap-signer-controller", alias: "bootstrapsigner", disabled: true},
	{name: "clusterrole-aggregation-controller", alias: "clusterrole-aggregation"},
	{name: "cronjob-controller", alias: "cronjob"},
	{name: "certificatesigningrequest-approving-controller", alias: "csrapproving"},
	{name: "certificatesigningrequest-cleaner-controller", alias: "csrcleaner"},
	{name: "certificatesigningrequest-signing-controller", alias: "csrsigning"},
	{name: "daemonset-controller", alias: "daemonset"},
	{name: "deployment-controller", alias: "deployment"},
	{name: "disruption-controller", alias: "disruption"},
	{name: "endpoints-controller", alias: "endpoint"},
	{name: "endpointslice-controller", alias: "endpointslice"},
	{name: "endpointslice-mirroring-controller", alias: "endpointslicemirroring"},
	{name: "ephemeral-volume-controller", alias: "ephemeral-volume"},
	{name: "garbage-collector-controller", alias: "garbagecollector"},
	{name: "horizontal-pod-autoscaler-controller", alias: "horizontalpodautoscaling"},
	{name: "job-controller", alias: "job"},
	{name: "legacy-serviceaccount-token-cleaner-controller", alias: "legacy-serviceaccount-token-cleaner"},
	{name: "namespace-controller", alias: "namespace"},
	{name: "node-ipam-controller", alias: "nodeipam"},
	{name: "node-lifecycle-controller", alias: "nodelifecycle"},
	{name: "persistentvolume-binder-controller", alias: "persistentvolume-binder"},
	{name: "persistentvolume-expander-controller", alias: "persistentvolume-expander"},
	{name: "pod-garbage-collector-controller", alias: "podgc"},
	{name: "persistentvolume-protection-controller", alias: "pv-protection"},
	{name: "persistentvolumeclaim-protection-controller", alias: "pvc-protection"},
	{name: "replicaset-controller", alias: "replicaset"},
	{name: "replicationcontroller-controller", alias: "replicationcontroller"},
	{name: "resourcequota-controller", alias: "resourcequota"},
	{name: "root-ca-certificate-publisher-controller", alias: "root-ca-cert-publisher"},
	{name: "service-lb-controller", alias: "service"},
	{name: "node-route-controller", alias: "route"},
	{name: "serviceaccount-controller", alias: "serviceaccount"},
	{name: "serviceaccount-token-controller", alias: "serviceaccount-token"},
	{name: "statefulset-controller", alias: "statefulset"},
	{name: "token-cleaner-controller", alias: "tokencleaner", disabled: true},
	{name: "ttl-controller", alias: "ttl"},
	{name: "ttl-after-finished-controller", alias: "ttl-after-finished"},
	// Skiff's own: the external provisioner of skiff-local-path's volumes
	// (upstream runs one beside each CSI driver).
	{name: "local-path-provisioner", alias: "local-path-provisioner"},
}

// canonical maps a name or alias to the canonical name.
func canonical(s string) (string, bool) {
	for _, k := range upstreamControllers {
		if s == k.name || s == k.alias {
			return k.name, true
		}
	}
	return "", false
}

// Selection is the --controllers flag resolved: which of the controllers
// Skiff has will run.
type Selection struct {
	// Enabled are canonical names, sorted.
	Enabled []string
	// Unavailable are names the flag asked for explicitly that Skiff does
	// not implement (yet): reported at start-up.
	Unavailable []string
}

// Select resolves --controllers as upstream: "*" enables every controller on
// by default, "foo" enables foo, "-foo" disables foo; the first word about a
// name decides, before "*", and an unknown name is an error naming it. available
// are the canonical names Skiff implements.
func Select(flag []string, available []string) (Selection, error) {
	explicitOn := map[string]bool{}
	explicitOff := map[string]bool{}
	star := false
	for _, raw := range flag {
		w := strings.TrimSpace(raw)
		switch {
		case w == "":
			continue
		case w == "*":
			star = true
			continue
		}
		off := strings.HasPrefix(w, "-")
		n, ok := canonical(strings.TrimPrefix(w, "-"))
		if !ok {
			return Selection{}, fmt.Errorf("--controllers: %q is not in the list of known controllers", strings.TrimPrefix(w, "-"))
		}
		if explicitOn[n] || explicitOff[n] {
			continue // upstream: the first word about a name decides
		}
		if off {
			explicitOff[n] = true
		} else {
			explicitOn[n] = true
		}
	}
	var s Selection
	for _, k := range upstreamControllers {
		on := explicitOn[k.name] || (star && !k.disabled && !explicitOff[k.name])
		if !on {
			continue
		}
		if slices.Contains(available, k.name) {
			s.Enabled = append(s.Enabled, k.name)
		} else if explicitOn[k.name] {
			s.Unavailable = append(s.Unavailable, k.name)
		}
	}
	sort.Strings(s.Enabled)
	sort.Strings(s.Unavailable)
	return s, nil
}
