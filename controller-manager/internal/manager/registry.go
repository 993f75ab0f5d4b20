package manager

import (
	"slices"

	"skiff.dev/controller-manager/internal/controllers/cronjob"
	"skiff.dev/controller-manager/internal/controllers/deployment"
	"skiff.dev/controller-manager/internal/controllers/endpoints"
	"skiff.dev/controller-manager/internal/controllers/endpointslice"
	"skiff.dev/controller-manager/internal/controllers/garbagecollector"
	"skiff.dev/controller-manager/internal/controllers/namespace"
	"skiff.dev/controller-manager/internal/controllers/nodeipam"
	"skiff.dev/controller-manager/internal/controllers/nodelifecycle"
	"skiff.dev/controller-manager/internal/controllers/podgc"
	"skiff.dev/controller-manager/internal/controllers/replicaset"
	"skiff.dev/controller-manager/internal/controllers/rootcacertpublisher"
	"skiff.dev/controller-manager/internal/controllers/serviceaccount"
)

// registry holds the controllers Skiff implements, by canonical name.
var registry = map[string]Constructor{
	"cronjob-controller":                       cronjob.New,
	"deployment-controller":                    deployment.New,
	"endpoints-controller":                     endpoints.New,
	"endpointslice-controller":                 endpointslice.New,
	"garbage-collector-controller":             garbagecollector.New,
	"namespace-controller":                     namespace.New,
	"node-ipam-controller":                     nodeipam.New,
	"node-lifecycle-controller":                nodelifecycle.New,
	"pod-garbage-collector-controller":         podgc.New,
	"replicaset-controller":                    replicaset.NewReplicaSet,
	"replicationcontroller-controller":         replicaset.NewReplicationController,
	"root-ca-certificate-publisher-controller": rootcacertpublisher.New,
	"serviceaccount-controller":                serviceaccount.New,
}

// Available are the canonical names of the controllers Skiff implements.
func Available() []string {
	out := make([]string, 0, len(registry))
	for n := range registry {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}
