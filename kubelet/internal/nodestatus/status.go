package nodestatus

import (
	"cmp"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"
	"k8s.io/apimachinery/pkg/api/resource"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
)

// KubeletVersion is what nodeInfo.kubeletVersion reports.
const KubeletVersion = "v1.37.2-skiff"

// Upstream's limits on the images a Node lists (--node-status-max-images
// and MaxNamesPerImageInNodeStatus).
const (
	maxImagesInNodeStatus        = 50
	maxNamesPerImageInNodeStatus = 5
)

// Upstream's well-known labels and the condition reasons and messages of
// its node status setters.
const (
	LabelHostname   = "kubernetes.io/hostname"
	LabelOS         = "kubernetes.io/os"
	LabelArch       = "kubernetes.io/arch"
	LabelOSBeta     = "beta.kubernetes.io/os"
	LabelArchBeta   = "beta.kubernetes.io/arch"
	annotationCMAD  = "volumes.kubernetes.io/controller-managed-attach-detach"
	conditionTrue   = "True"
	conditionFalse  = "False"
	conditionReady  = "Ready"
	conditionMemory = "MemoryPressure"
	conditionDisk   = "DiskPressure"
	conditionPID    = "PIDPressure"
)

// hardEviction is upstream's default --eviction-hard as far as it is
// reserved from allocatable: memory.available<100Mi, nodefs.available<10%.
var hardEviction = struct {
	memory          resource.Quantity
	nodefsAvailable float64
}{resource.MustParse("100Mi"), 0.10}

// defaultLabels are the labels the kubelet owns on its Node (upstream's
// updateDefaultLabels reconciles them on every registration).
func defaultLabels(nodeName string) map[string]string {
	return map[string]string{
		LabelHostname: nodeName,
		LabelOS:       runtime.GOOS, LabelArch: runtime.GOARCH,
		LabelOSBeta: runtime.GOOS, LabelArchBeta: runtime.GOARCH,
	}
}

// observed is what one status computation reads from the machine and the
// runtime.
type observed struct {
	machine   *Machine
	addresses []string
	version   *runtimeapi.VersionResponse
	// runtimeErr is why the runtime is not ready; nil when it is.
	runtimeErr error
	images     []*runtimeapi.Image
	now        time.Time
}

// capacity is upstream's MachineInfo setter: cpu and memory of the machine,
// pods from --max-pods, ephemeral-storage of the root directory's
// filesystem, and every huge page size.
func capacity(m *Machine, maxPods int) map[string]resource.Quantity {
	c := map[string]resource.Quantity{
		"cpu":               *resource.NewMilliQuantity(int64(m.NumCores)*1000, resource.DecimalSI),
		"memory":            *resource.NewQuantity(m.MemoryBytes, resource.BinarySI),
		"pods":              *resource.NewQuantity(int64(maxPods), resource.DecimalSI),
		"ephemeral-storage": *resource.NewQuantity(m.EphemeralStorageBytes, resource.BinarySI),
	}
	for name, b := range m.HugePages {
		c[name] = *resource.NewQuantity(b, resource.BinarySI)
	}
	return c
}

// defaultEvictionReserved is hardEviction's share of capacity.
func defaultEvictionReserved(capacity map[string]resource.Quantity) map[string]resource.Quantity {
	eviction := map[string]resource.Quantity{"memory": hardEviction.memory}
	if es, ok := capacity["ephemeral-storage"]; ok {
		eviction["ephemeral-storage"] = *resource.NewQuantity(int64(float64(es.Value())*hardEviction.nodefsAvailable), resource.BinarySI)
	}
	return eviction
}

// allocatable is capacity less --system-reserved, --kube-reserved and the
// hard eviction thresholds' share, and memory less the huge pages
// (upstream's GetNodeAllocatableReservation and the Allocatable setter);
// never below 0.
func allocatable(capacity, systemReserved, kubeReserved, eviction map[string]resource.Quantity) map[string]resource.Quantity {
	return reserve(capacity, systemReserved, kubeReserved, eviction)
}

// KubepodsLimits is what the kubepods cgroup is held to: with enforce
// (--enforce-node-allocatable=pods) capacity less --system-reserved and
// --kube-reserved, memory less the huge pages (upstream's
// getNodeAllocatableAbsolute), but not less the hard eviction thresholds,
// which must stay inside the cgroup for the eviction manager to act before
// the kernel's OOM killer; else the whole capacity. Nil before the machine
// is read (Known).
func (m *Manager) KubepodsLimits(enforce bool) map[string]resource.Quantity {
	m.mu.Lock()
	machine := m.machine
	m.mu.Unlock()
	if machine == nil {
		return nil
	}
	c := capacity(machine, m.cfg.MaxPods)
	if !enforce {
		return c
	}
	return reserve(c, m.systemReserved, m.kubeReserved)
}

// reserve is capacity less each of reserved, memory also less the huge
// pages; never below 0.
func reserve(capacity map[string]resource.Quantity, reserved ...map[string]resource.Quantity) map[string]resource.Quantity {
	out := map[string]resource.Quantity{}
	for name, c := range capacity {
		v := c.DeepCopy()
		for _, r := range reserved {
			if q, ok := r[name]; ok {
				v.Sub(q)
			}
		}
		if name == "memory" {
			for hp, q := range capacity {
				if strings.HasPrefix(hp, "hugepages-") {
					v.Sub(q)
				}
			}
		}
		if v.Sign() < 0 {
			v.Set(0)
		}
		out[name] = v
	}
	return out
}

func quantities(in map[string]resource.Quantity) map[string]*metav1.Quantity {
	out := make(map[string]*metav1.Quantity, len(in))
	for k, v := range in {
		out[k] = &metav1.Quantity{String_: v.String()}
	}
	return out
}

// ParseResourceList reads a --system-reserved style list
// ("cpu=100m,memory=100Mi") with apimachinery's quantity parser.
func ParseResourceList(s string) (map[string]resource.Quantity, error) {
	out := map[string]resource.Quantity{}
	if strings.TrimSpace(s) == "" {
		return out, nil
	}
	for _, kv := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(kv), "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("%q is not name=quantity", kv)
		}
		switch k {
		case "cpu", "memory", "ephemeral-storage", "pid":
		default:
			return nil, fmt.Errorf("%q is not a reservable resource (cpu, memory, ephemeral-storage, pid)", k)
		}
		q, err := resource.ParseQuantity(v)
		if err != nil {
			return nil, fmt.Errorf("%s=%q: %w", k, v, err)
		}
		if q.Sign() < 0 {
			return nil, fmt.Errorf("%s=%q: must not be negative", k, v)
		}
		out[k] = q
	}
	return out, nil
}

// fromProto reads a ResourceList of the API into quantities.
func fromProto(in map[string]*metav1.Quantity) (map[string]resource.Quantity, error) {
	out := map[string]resource.Quantity{}
	for k, v := range in {
		q, err := resource.ParseQuantity(v.GetString_())
		if err != nil {
			return nil, fmt.Errorf("%s: %w", k, err)
		}
		out[k] = q
	}
	return out, nil
}

// setStatus fills node.Status from what was observed, keeping condition
// transition times, as upstream's defaultNodeStatusFuncs do in order:
// addresses, machine info, version info, daemon endpoints, images,
// then MemoryPressure, DiskPressure, PIDPressure and Ready.
func (m *Manager) setStatus(node *corev1.Node, o observed) {
	if node.Status == nil {
		node.Status = &corev1.NodeStatus{}
	}
	st := node.Status
	st.Addresses = nil
	for _, ip := range o.addresses {
		st.Addresses = append(st.Addresses, &corev1.NodeAddress{Type: "InternalIP", Address: ip})
	}
	st.Addresses = append(st.Addresses, &corev1.NodeAddress{Type: "Hostname", Address: m.cfg.NodeName})

	c := capacity(o.machine, m.cfg.MaxPods)
	st.Capacity = quantities(c)
	reserve := defaultEvictionReserved
	if m.cfg.EvictionReserved != nil {
		reserve = m.cfg.EvictionReserved
	}
	st.Allocatable = quantities(allocatable(c, m.systemReserved, m.kubeReserved, reserve(c)))

	if st.NodeInfo == nil {
		st.NodeInfo = &corev1.NodeSystemInfo{}
	}
	ni := st.NodeInfo
	ni.MachineID, ni.SystemUUID, ni.BootID = o.machine.MachineID, o.machine.SystemUUID, o.machine.BootID
	ni.KernelVersion, ni.OsImage = o.machine.KernelVersion, o.machine.OSImage
	if o.version != nil {
		ni.ContainerRuntimeVersion = o.version.GetRuntimeName() + "://" + o.version.GetRuntimeVersion()
	}
	ni.KubeletVersion = KubeletVersion
	ni.OperatingSystem, ni.Architecture = runtime.GOOS, runtime.GOARCH

	st.DaemonEndpoints = &corev1.NodeDaemonEndpoints{KubeletEndpoint: &corev1.DaemonEndpoint{Port: m.cfg.KubeletPort}}
	st.Images = nodeImages(o.images)

	now := metav1.NewTime(o.now)
	var memory, disk, pid bool
	if m.cfg.Pressure != nil {
		memory, disk, pid = m.cfg.Pressure()
	}
	m.pressureCondition(node, conditionMemory, memory, pressureMemory, now)
	m.pressureCondition(node, conditionDisk, disk, pressureDisk, now)
	m.pressureCondition(node, conditionPID, pid, pressurePID, now)
	m.readyCondition(node, o.runtimeErr, now)
}

func findCondition(st *corev1.NodeStatus, t string) *corev1.NodeCondition {
	for _, c := range st.Conditions {
		if c.Type == t {
			return c
		}
	}
	return nil
}

// pressureStates are a pressure condition's reason, message and event
// when under pressure and when not, upstream's.
type pressureStates struct {
	reason, message, event             string
	fineReason, fineMessage, fineEvent string
}

var (
	pressureMemory = pressureStates{"KubeletHasInsufficientMemory", "kubelet has insufficient memory available", "NodeHasInsufficientMemory",
		"KubeletHasSufficientMemory", "kubelet has sufficient memory available", "NodeHasSufficientMemory"}
	pressureDisk = pressureStates{"KubeletHasDiskPressure", "kubelet has disk pressure", "NodeHasDiskPressure",
		"KubeletHasNoDiskPressure", "kubelet has no disk pressure", "NodeHasNoDiskPressure"}
	pressurePID = pressureStates{"KubeletHasInsufficientPID", "kubelet has insufficient PID available", "NodeHasInsufficientPID",
		"KubeletHasSufficientPID", "kubelet has sufficient PID available", "NodeHasSufficientPID"}
)

// pressureCondition is upstream's MemoryPressureCondition (and its disk
// and PID siblings): True under pressure, else False, the transition time
// and a Normal event only when the status changes.
func (m *Manager) pressureCondition(node *corev1.Node, t string, pressure bool, s pressureStates, now *metav1.Time) {
	c := findCondition(node.Status, t)
	if c == nil {
		c = &corev1.NodeCondition{Type: t, Status: "Unknown"}
		node.Status.Conditions = append(node.Status.Conditions, c)
	}
	c.LastHeartbeatTime = now
	status, reason, message, event := conditionFalse, s.fineReason, s.fineMessage, s.fineEvent
	if pressure {
		status, reason, message, event = conditionTrue, s.reason, s.message, s.event
	}
	if c.Status != status {
		c.Status, c.Reason, c.Message, c.LastTransitionTime = status, reason, message, now
		m.event(node, "Normal", event, "Node "+m.cfg.NodeName+" status is now: "+event)
	}
}

// readyCondition is upstream's ReadyCondition: KubeletReady unless the
// runtime is not ready or a required capacity is missing.
func (m *Manager) readyCondition(node *corev1.Node, runtimeErr error, now *metav1.Time) {
	errs := []error{runtimeErr}
	var missing []string
	for _, r := range []string{"cpu", "memory", "pods"} {
		if _, ok := node.Status.Capacity[r]; !ok {
			missing = append(missing, r)
		}
	}
	if len(missing) > 0 {
		errs = append(errs, fmt.Errorf("missing node capacity for resources: %s", strings.Join(missing, ", ")))
	}
	nc := &corev1.NodeCondition{Type: conditionReady, Status: conditionTrue, Reason: "KubeletReady",
		Message: "kubelet is posting ready status", LastHeartbeatTime: now}
	if msg := aggregate(errs); msg != "" {
		nc.Status, nc.Reason, nc.Message = conditionFalse, "KubeletNotReady", msg
	}
	for i, old := range node.Status.Conditions {
		if old.Type != conditionReady {
			continue
		}
		if old.Status == nc.Status {
			nc.LastTransitionTime = old.LastTransitionTime
		} else {
			nc.LastTransitionTime = now
			if nc.Status == conditionTrue {
				m.event(node, "Normal", "NodeReady", "Node "+m.cfg.NodeName+" status is now: NodeReady")
			} else {
				m.event(node, "Normal", "NodeNotReady", "Node "+m.cfg.NodeName+" status is now: NodeNotReady")
				m.log.Info("Node became not ready", "node", m.cfg.NodeName, "reason", nc.Reason, "message", nc.Message)
			}
		}
		node.Status.Conditions[i] = nc
		return
	}
	nc.LastTransitionTime = now
	node.Status.Conditions = append(node.Status.Conditions, nc)
}

// aggregate writes errors as apimachinery's NewAggregate does: one error
// as itself, several as "[a, b]".
func aggregate(errs []error) string {
	var msgs []string
	for _, e := range errs {
		if e != nil {
			msgs = append(msgs, e.Error())
		}
	}
	switch len(msgs) {
	case 0:
		return ""
	case 1:
		return msgs[0]
	}
	return "[" + strings.Join(msgs, ", ") + "]"
}

// runtimeError is upstream's runtimeState errors from a CRI Status: the
// runtime's and the network's readiness, written as kubecontainer's
// RuntimeCondition.String.
func runtimeError(st *runtimeapi.StatusResponse, err error) error {
	if err != nil {
		return errors.New("container runtime is down")
	}
	var errs []error
	for _, t := range []string{runtimeapi.RuntimeReady, runtimeapi.NetworkReady} {
		var c *runtimeapi.RuntimeCondition
		for _, rc := range st.GetStatus().GetConditions() {
			if rc.GetType() == t {
				c = rc
			}
		}
		if c != nil && c.Status {
			continue
		}
		what := "container runtime not ready"
		if t == runtimeapi.NetworkReady {
			what = "container runtime network not ready"
		}
		if c == nil {
			errs = append(errs, fmt.Errorf("%s: %s is missing", what, t))
			continue
		}
		errs = append(errs, fmt.Errorf("%s: %s=%t reason:%s message:%s", what, c.Type, c.Status, c.Reason, c.Message))
	}
	if msg := aggregate(errs); msg != "" {
		return errors.New(msg)
	}
	return nil
}

// nodeImages is upstream's Images setter: the largest images first, at most
// 50, each with up to 5 names (digests, then tags).
func nodeImages(images []*runtimeapi.Image) []*corev1.ContainerImage {
	sorted := slices.Clone(images)
	slices.SortFunc(sorted, func(a, b *runtimeapi.Image) int {
		if c := cmp.Compare(b.GetSize(), a.GetSize()); c != 0 {
			return c
		}
		return cmp.Compare(b.GetId(), a.GetId())
	})
	var out []*corev1.ContainerImage
	for _, img := range sorted {
		if len(out) == maxImagesInNodeStatus {
			break
		}
		names := append(slices.Clone(img.GetRepoDigests()), img.GetRepoTags()...)
		if len(names) > maxNamesPerImageInNodeStatus {
			names = names[:maxNamesPerImageInNodeStatus]
		}
		out = append(out, &corev1.ContainerImage{Names: names, SizeBytes: int64(img.GetSize())})
	}
	return out
}

// statusChanged is upstream's nodeStatusHasChanged: any difference but the
// conditions' heartbeat times.
func statusChanged(old, cur *corev1.NodeStatus) bool {
	if old == nil || cur == nil {
		return old != cur
	}
	a, b := proto.Clone(old).(*corev1.NodeStatus), proto.Clone(cur).(*corev1.NodeStatus)
	for _, st := range []*corev1.NodeStatus{a, b} {
		for _, c := range st.Conditions {
			c.LastHeartbeatTime = nil
		}
	}
	return !proto.Equal(a, b)
}
