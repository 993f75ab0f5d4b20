package manager

import (
	"slices"

	"skiff.dev/controller-manager/internal/controllers/cronjob"
	"skiff.dev/controller-manager/internal/controllers/daemonset"
	"skiff.dev/controller-manager/internal/controllers/deployment"
	"skiff.dev/controller-manager/internal/controllers/disruption"
	"skiff.dev/controller-manager/internal/controllers/endpoints"
	"skiff.dev/controller-manager/internal/controllers/endpointslice"
	"skiff.dev/controller-manager/internal/controllers/garbagecollector"
	"skiff.dev/controller-manager/internal/controllers/job"
	"skiff.dev/controller-manager/internal/controllers/localpathprovisioner"
	"skiff.dev/controller-manager/internal/controllers/namespace"
	"skiff.dev/controller-manager/internal/controllers/nodeipam"
	"skiff.dev/controller-manager/internal/controllers/nodelifecycle"
	"skiff.dev/controller-manager/internal/controllers/persistentvolume"
	"skiff.dev/controller-manager/internal/controllers/podautoscaler"
	"skiff.dev/controller-manager/internal/controllers/podgc"
	"skiff.dev/controller-manager/internal/controllers/pvprotection"
	"skiff.dev/controller-manager/internal/controllers/replicaset"
	"skiff.dev/controller-manager/internal/controllers/resourcequota"
	"skiff.dev/controller-manager/internal/controllers/rootcacertpublisher"
	"skiff.dev/controller-manager/internal/controllers/serviceaccount"
	"skiff.dev/controller-manager/internal/controllers/statefulset"
	"skiff.dev/controller-manager/internal/controllers/ttlafterfinished"
)

// registry holds the controllers Skiff implements, by canonical name.
var registry = map[string]Constructor{
	"cronjob-controller":                          cronjob.New,
	"daemonset-controller":                        daemonset.New,
	"deployment-controller":                       deployment.New,
	"disruption-controller":                       disruption.New,
	"endpoints-controller":                        endpoints.New,
	"endpointslice-controller":                    endpointslice.New,
	"garbage-collector-controller":                garbagecollector.New,
	"horizontal-pod-autoscaler-controller":        podautoscaler.New,
	"job-controller":                              job.New,
	"local-path-provisioner":                      localpathprovisioner.New,
	"namespace-controller":                        namespace.New,
	"node-ipam-controller":                        nodeipam.New,
	"node-lifecycle-controller":                   nodelifecycle.New,
	"persistentvolume-binder-controller":          persistentvolume.New,
	"persistentvolume-protection-controller":      pvprotection.NewPVProtection,
	"persistentvolumeclaim-protection-controller": pvprotection.NewPVCProtection,
	"pod-garbage-collector-controller":            podgc.New,
	"replicaset-controller":                       replicaset.NewReplicaSet,
	"replicationcontroller-controller":            replicaset.NewReplicationController,
	"resourcequota-controller":                    resourcequota.New,
	"root-ca-certificate-publisher-controller":    rootcacertpublisher.New,
	"serviceaccount-controller":                   serviceaccount.New,
	"statefulset-controller":                      statefulset.New,
	"ttl-after-finished-controller":               ttlafterfinished.New,
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
