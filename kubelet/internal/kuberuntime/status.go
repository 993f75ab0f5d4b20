package kuberuntime

import (
	"context"
	"sort"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"skiff.dev/kubelet/internal/cri"
)

// PodStatus is the runtime's view of one pod: every sandbox and container
// the runtime holds for its UID, newest first.
type PodStatus struct {
	UID, Name, Namespace string
	// IPs are the newest sandbox's addresses, primary first.
	IPs        []string
	Sandboxes  []*runtimeapi.PodSandboxStatus
	Containers []*runtimeapi.ContainerStatus
	// SandboxOf maps a container ID to its sandbox's.
	SandboxOf map[string]string
	// Timestamp is when the runtime was asked.
	Timestamp time.Time
}

// Container is the newest attempt of the named container, nil if none.
func (s *PodStatus) Container(name string) *runtimeapi.ContainerStatus {
	if s == nil {
		return nil
	}
	for _, c := range s.Containers {
		if c.GetMetadata().GetName() == name {
			return c
		}
	}
	return nil
}

// Running lists the running containers.
func (s *PodStatus) Running() []*runtimeapi.ContainerStatus {
	var out []*runtimeapi.ContainerStatus
	for _, c := range s.Containers {
		if c.GetState() == runtimeapi.ContainerState_CONTAINER_RUNNING {
			out = append(out, c)
		}
	}
	return out
}

// SandboxReady reports whether the newest sandbox is ready.
func (s *PodStatus) SandboxReady() bool {
	return s != nil && len(s.Sandboxes) > 0 && s.Sandboxes[0].GetState() == runtimeapi.PodSandboxState_SANDBOX_READY
}

// Inspect asks the runtime for everything it holds for a pod UID, as
// upstream's GetPodStatus. Containers and sandboxes that vanish between
// the list and their status call are skipped: the next sync sees them gone.
func Inspect(ctx context.Context, rt cri.Runtime, uid string, now time.Time) (*PodStatus, error) {
	sel := map[string]string{LabelPodUID: uid}
	sandboxes, err := rt.ListPodSandbox(ctx, &runtimeapi.PodSandboxFilter{LabelSelector: sel})
	if err != nil {
		return nil, err
	}
	st := &PodStatus{UID: uid, Timestamp: now, SandboxOf: map[string]string{}}
	for _, sb := range sandboxes {
		resp, err := rt.PodSandboxStatus(ctx, sb.Id, false)
		if err != nil || resp.GetStatus() == nil {
			continue
		}
		st.Sandboxes = append(st.Sandboxes, resp.Status)
	}
	sort.SliceStable(st.Sandboxes, func(i, j int) bool { return st.Sandboxes[i].CreatedAt > st.Sandboxes[j].CreatedAt })
	if len(st.Sandboxes) > 0 {
		sb := st.Sandboxes[0]
		st.Name, st.Namespace = sb.GetMetadata().GetName(), sb.GetMetadata().GetNamespace()
		if sb.GetState() == runtimeapi.PodSandboxState_SANDBOX_READY {
			if ip := sb.GetNetwork().GetIp(); ip != "" {
				st.IPs = append(st.IPs, ip)
			}
			for _, ip := range sb.GetNetwork().GetAdditionalIps() {
				st.IPs = append(st.IPs, ip.GetIp())
			}
		}
	}
	containers, err := rt.ListContainers(ctx, &runtimeapi.ContainerFilter{LabelSelector: sel})
	if err != nil {
		return nil, err
	}
	for _, c := range containers {
		resp, err := rt.ContainerStatus(ctx, c.Id, false)
		if err != nil || resp.GetStatus() == nil {
			continue
		}
		cs := resp.Status
		// Some runtimes leave labels out of ContainerStatus; the list has them.
		if cs.Labels == nil {
			cs.Labels = c.Labels
		}
		if cs.Annotations == nil {
			cs.Annotations = c.Annotations
		}
		st.Containers = append(st.Containers, cs)
		st.SandboxOf[c.Id] = c.PodSandboxId
	}
	sort.SliceStable(st.Containers, func(i, j int) bool { return st.Containers[i].CreatedAt > st.Containers[j].CreatedAt })
	return st, nil
}
