package app

import (
	"context"
	"errors"
	"fmt"
	"time"

	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/labels"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"skiff.dev/client"
	"skiff.dev/client/informer"
	"skiff.dev/client/informers"
	"skiff.dev/kubelet/internal/admission"
	"skiff.dev/kubelet/internal/cri"
	"skiff.dev/kubelet/internal/dns"
	"skiff.dev/kubelet/internal/envvars"
	"skiff.dev/kubelet/internal/nodestatus"
	"skiff.dev/kubelet/internal/podcgroups"
	"skiff.dev/kubelet/internal/pods"
	"skiff.dev/kubelet/internal/prober"
	"skiff.dev/kubelet/internal/qos"
	"skiff.dev/kubelet/internal/staticpods"
	"skiff.dev/kubelet/internal/status"
	"skiff.dev/kubelet/internal/volumes"
	authenticationv1 "skiff.dev/proto/api/authentication/v1"
	corev1 "skiff.dev/proto/api/core/v1"
)

// podWorkers is what the kubelet runs of kubelet/internal/pods: a Manager
// fed by the node's pod informer.
type podWorkers interface {
	Handler() informer.Handler
	Run(ctx context.Context) error
}

// podParts are the pods manager and what it needs running beside it.
type podParts struct {
	*pods.Manager
	services *informers.Factory
	prober   *prober.Manager
	static   *staticpods.Source // nil without --pod-manifest-path
	// cgroups is nil when the kubelet makes none (--cgroups-per-qos=false,
	// hollow nodes); kubepods is what it holds the kubepods cgroup to.
	cgroups  *podcgroups.Manager
	kubepods func() map[string]resource.Quantity
}

// Run starts the Service informer the environment variables read, then the
// pod workers; the prober stops with them.
func (p *podParts) Run(ctx context.Context) error {
	defer p.prober.Close()
	// Before any pod's cgroup, as upstream's container manager at start;
	// the kubelet cannot run pods without them.
	if p.cgroups != nil {
		if err := p.cgroups.EnsureQoS(p.kubepods()); err != nil {
			return fmt.Errorf("creating the QoS cgroups: %w", err)
		}
	}
	// Not waited for: static pods must start without an apiserver; the
	// environment of API pods waits for the Services instead (see env).
	p.services.Start(ctx)
	defer p.services.Shutdown()
	if p.static != nil {
		done := make(chan struct{})
		go func() { defer close(done); _ = p.static.Run(ctx) }()
		defer func() { <-done }()
	}
	return p.Manager.Run(ctx)
}

// newPodWorkers builds the pods manager over k's client, runtime, pod
// lister and recorder, with the hooks of the other internal packages.
//
// Static pods come from --pod-manifest-path, with their mirror pods in the
// API. Left for later: NodeAllocatable for downward API limits (the Node is
// not known when this is built).
func newPodWorkers(k *Kubelet) (podWorkers, error) {
	o, c := k.cfg.Options, k.cfg.Client
	configMap := func(ns, name string) (*corev1.ConfigMap, error) {
		return client.For[*corev1.ConfigMap](c, ns).Get(context.Background(), name)
	}
	secret := func(ns, name string) (*corev1.Secret, error) {
		return client.For[*corev1.Secret](c, ns).Get(context.Background(), name)
	}
	hostIPs := o.NodeIPs
	if len(hostIPs) == 0 {
		if ip, err := nodestatus.HostIP(); err == nil {
			hostIPs = []string{ip}
		}
	}
	services := informers.NewFactory(c, informers.Options{Logger: k.log})
	svcs := informers.For[*corev1.Service](services)
	svcLister := svcs.Lister()
	env := func(pod *corev1.Pod, ctr *corev1.Container) ([]*runtimeapi.KeyValue, error) {
		// Upstream's rule: a pod from the API means the apiserver answers,
		// so its containers wait for the Services to be read once rather
		// than start without KUBERNETES_SERVICE_HOST; a static pod may run
		// with no apiserver at all, and does not wait.
		if !staticpods.IsStaticPod(pod) && !svcs.Informer().HasSynced() {
			return nil, errors.New("services have not yet been read at least once, cannot construct envvars")
		}
		src := envvars.Sources{ConfigMap: configMap, Secret: secret, Services: svcLister.List(labels.Everything()),
			NodeName: k.nodeName, HostIPs: hostIPs,
			PodIP: pod.GetStatus().GetPodIP(),
			Event: func(t, reason, msg string) { k.recorder.Event(pod, t, reason, msg) }}
		if len(hostIPs) > 0 {
			src.HostIP = hostIPs[0]
		}
		for _, ip := range pod.GetStatus().GetPodIPs() {
			src.PodIPs = append(src.PodIPs, ip.GetIp())
		}
		return envvars.Env(pod, ctr, src)
	}
	d := dns.Options{ClusterDNS: o.ClusterDNS, ClusterDomain: o.ClusterDomain, ResolvConf: o.ResolvConf,
		Event: func(pod *corev1.Pod, t, reason, msg string) { k.recorder.Event(pod, t, reason, msg) }}
	rt := k.cfg.Runtime
	pr := prober.New(func(ctx context.Context, id string, cmd []string, timeout time.Duration) ([]byte, []byte, int32, error) {
		stdout, stderr, err := rt.ExecSync(ctx, id, cmd, timeout)
		var exit *cri.ExitError
		if errors.As(err, &exit) {
			return exit.Stdout, exit.Stderr, exit.Code, nil
		}
		return stdout, stderr, 0, err
	}, k.recorder, time.Now)
	var static *staticpods.Source
	var staticPods <-chan []*corev1.Pod
	if o.PodManifestPath != "" {
		static = staticpods.NewSource(o.PodManifestPath, k.nodeName, staticpods.Options{Logger: k.log.With("component", "static-pods")})
		staticPods = static.Updates()
	}
	var m *pods.Manager
	admit := func(pod *corev1.Pod) (bool, string, string) {
		// The eviction manager's admitter first, as upstream orders them.
		if pressure := k.pressureFunc(); pressure != nil {
			memory, disk, pid := pressure()
			if ok, reason, msg := admission.Pressure(pod, memory, disk, pid); !ok {
				return false, reason, msg
			}
		}
		// Registered or not: the pods workers start only once the
		// node is known (Run).
		node := k.status.NodeAnyway()
		var others []*corev1.Pod
		// The manager's pods: the lister holds a static pod's mirror, which
		// would count the pod against itself.
		for _, p := range m.Pods() {
			ph := p.GetStatus().GetPhase()
			if p.GetMetadata().GetUid() != pod.GetMetadata().GetUid() && ph != "Succeeded" && ph != "Failed" {
				others = append(others, p)
			}
		}
		return admission.Admit(pod, node, others)
	}
	cgroups, err := newCgroups(k)
	if err != nil {
		return nil, err
	}
	cgroupParent := func(pod *corev1.Pod) string { return qos.PodCgroupParent(o.CgroupRoot, pod) }
	var podCgroups pods.Cgroups
	switch {
	case cgroups != nil:
		cgroupParent, podCgroups = cgroups.PodCgroup, cgroups
	case !o.CgroupsPerQOS:
		// Upstream's layout without the hierarchy.
		cgroupParent = func(*corev1.Pod) string { return o.CgroupRoot }
	}
	m, err = pods.New(pods.Config{
		Client: c, NodeName: k.nodeName, Runtime: rt, Pods: k.podLister, HasSynced: k.pods.HasSynced,
		Recorder: k.recorder, Logger: k.log.With("component", "pods"), Registerer: k.cfg.Registry,
		RootDir: o.RootDir, PodLogsDir: o.PodLogsDir, SandboxImage: o.PodInfraContainerImage, CgroupRoot: o.CgroupRoot,
		Env: env, Command: envvars.Command,
		Volumes: newVolumes(k.cfg.NoMounts, o.RootDir, volumes.Sources{ConfigMap: configMap, Secret: secret, Env: env, Token: token(c), Storage: k.storageSources()}),
		DNS:     d.Config, Hosts: d.Hosts,
		Status:       status.Compute,
		Resources:    qos.ContainerResources,
		CgroupParent: cgroupParent,
		Cgroups:      podCgroups,
		Admit:        admit,
		Prober:       pr,
		Secret:       secret,
		HostIPs:      hostIPs,
		Static:       staticPods,
		Node:         k.Node,
	})
	if err != nil {
		return nil, err
	}
	return &podParts{Manager: m, services: services, prober: pr, static: static, cgroups: cgroups,
		kubepods: func() map[string]resource.Quantity { return k.status.KubepodsLimits(o.enforcePods()) }}, nil
}

// newCgroups is the pod cgroup manager, nil where the kubelet makes no
// cgroups: --cgroups-per-qos=false, and hollow nodes, many kubelets in one
// process without root over fake runtimes.
func newCgroups(k *Kubelet) (*podcgroups.Manager, error) {
	o := k.cfg.Options
	if !o.CgroupsPerQOS || k.cfg.NoMounts {
		return nil, nil
	}
	return podcgroups.New(podcgroups.Config{Root: o.CgroupRoot, PodPidsLimit: o.PodMaxPids,
		Logger: k.log.With("component", "cgroups"), Registerer: k.cfg.Registry})
}

// token asks the apiserver for a token of the pod's service account bound to
// the pod (the serviceAccountToken projection of kube-api-access-…); the
// volume manager refreshes it before it expires.
func token(c *client.Client) func(ctx context.Context, pod *corev1.Pod, audience string, expirationSeconds int64) (string, error) {
	return func(ctx context.Context, pod *corev1.Pod, audience string, expirationSeconds int64) (string, error) {
		m := pod.GetMetadata()
		sa := pod.GetSpec().GetServiceAccountName()
		if sa == "" {
			sa = "default"
		}
		spec := &authenticationv1.TokenRequestSpec{ExpirationSeconds: &expirationSeconds,
			BoundObjectRef: &authenticationv1.BoundObjectReference{Kind: "Pod", ApiVersion: "v1", Name: m.GetName(), UID: m.GetUid()}}
		if audience != "" {
			spec.Audiences = []string{audience}
		}
		tr, err := c.CreateToken(ctx, m.GetNamespace(), sa, &authenticationv1.TokenRequest{Spec: spec})
		if err != nil {
			return "", err
		}
		return tr.GetStatus().GetToken(), nil
	}
}

func newVolumes(noMounts bool, root string, src volumes.Sources) *volumes.Manager {
	if noMounts {
		return volumes.NewWithoutMounts(root, src)
	}
	return volumes.New(root, src)
}
