package printers

import (
	"bytes"
	"strings"
	"testing"
	"time"

	autoscalingv2 "skiff.dev/proto/api/autoscaling/v2"
	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
	storagev1 "skiff.dev/proto/api/storage/v1"
	"skiff.dev/proto/scheme"
)

func waiting(reason string) *corev1.ContainerStatus {
	return &corev1.ContainerStatus{State: &corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: reason}}}
}

func TestPodStatusReasons(t *testing.T) {
	running := &corev1.ContainerStatus{Ready: true, State: &corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}}
	done := &corev1.ContainerStatus{State: &corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{Reason: "Completed"}}}
	killed := &corev1.ContainerStatus{State: &corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{Signal: 9}}}
	exit2 := &corev1.ContainerStatus{State: &corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 2}}}
	cases := []struct {
		name   string
		status *corev1.PodStatus
		init   int
		del    bool
		want   string
	}{
		{"pending", &corev1.PodStatus{Phase: "Pending"}, 0, false, "Pending"},
		{"creating", &corev1.PodStatus{Phase: "Pending", ContainerStatuses: []*corev1.ContainerStatus{waiting("ContainerCreating")}}, 0, false, "ContainerCreating"},
		{"running", &corev1.PodStatus{Phase: "Running", ContainerStatuses: []*corev1.ContainerStatus{running}}, 0, false, "Running"},
		{"crash loop", &corev1.PodStatus{Phase: "Running", ContainerStatuses: []*corev1.ContainerStatus{waiting("CrashLoopBackOff")}}, 0, false, "CrashLoopBackOff"},
		{"completed", &corev1.PodStatus{Phase: "Succeeded", ContainerStatuses: []*corev1.ContainerStatus{done}}, 0, false, "Completed"},
		{"signal", &corev1.PodStatus{Phase: "Failed", ContainerStatuses: []*corev1.ContainerStatus{killed}}, 0, false, "Signal:9"},
		{"exit code", &corev1.PodStatus{Phase: "Failed", ContainerStatuses: []*corev1.ContainerStatus{exit2}}, 0, false, "ExitCode:2"},
		{"init waiting", &corev1.PodStatus{Phase: "Pending", InitContainerStatuses: []*corev1.ContainerStatus{waiting("PodInitializing")}}, 2, false, "Init:0/2"},
		{"init crash", &corev1.PodStatus{Phase: "Pending", InitContainerStatuses: []*corev1.ContainerStatus{waiting("CrashLoopBackOff")}}, 1, false, "Init:CrashLoopBackOff"},
		{"terminating", &corev1.PodStatus{Phase: "Running", ContainerStatuses: []*corev1.ContainerStatus{running}}, 0, true, "Terminating"},
		{"evicted", &corev1.PodStatus{Phase: "Failed", Reason: "Evicted"}, 0, false, "Evicted"},
	}
	for _, tc := range cases {
		p := &corev1.Pod{Metadata: &metav1.ObjectMeta{Name: "p"}, Spec: &corev1.PodSpec{}, Status: tc.status}
		for range tc.init {
			p.Spec.InitContainers = append(p.Spec.InitContainers, &corev1.Container{})
		}
		if tc.del {
			p.Metadata.DeletionTimestamp = metav1.Now()
		}
		if got := PodStatus(p); got != tc.want {
			t.Errorf("%s: got %s, want %s", tc.name, got, tc.want)
		}
	}
}

func TestTables(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	created := metav1.NewTime(now.Add(-3*time.Minute - 2*time.Second))
	nodePort := &corev1.Service{Metadata: &metav1.ObjectMeta{Name: "web", Namespace: "default", CreationTimestamp: created},
		Spec: &corev1.ServiceSpec{Type: "NodePort", ClusterIP: "10.96.0.10", Ports: []*corev1.ServicePort{{Port: 80, NodePort: 30080, Protocol: "TCP"}, {Port: 443, Protocol: "TCP"}}}}
	node := &corev1.Node{Metadata: &metav1.ObjectMeta{Name: "n1", CreationTimestamp: metav1.NewTime(now.Add(-49 * time.Hour)), Labels: map[string]string{"node-role.kubernetes.io/control-plane": ""}},
		Spec:   &corev1.NodeSpec{Unschedulable: true},
		Status: &corev1.NodeStatus{Conditions: []*corev1.NodeCondition{{Type: "Ready", Status: "True"}}, NodeInfo: &corev1.NodeSystemInfo{KubeletVersion: "v1.37.0-skiff"}}}
	cases := []struct {
		obj  scheme.Object
		opts Options
		want string
	}{
		{nodePort, Options{Now: now}, "NAME   TYPE       CLUSTER-IP   EXTERNAL-IP   PORT(S)                AGE\nweb    NodePort   10.96.0.10   <none>        80:30080/TCP,443/TCP   3m2s\n"},
		{nodePort, Options{Now: now, AllNamespaces: true}, "NAMESPACE   NAME   TYPE       CLUSTER-IP   EXTERNAL-IP   PORT(S)                AGE\ndefault     web    NodePort   10.96.0.10   <none>        80:30080/TCP,443/TCP   3m2s\n"},
		{node, Options{Now: now}, "NAME   STATUS                     ROLES           AGE    VERSION\nn1     Ready,SchedulingDisabled   control-plane   2d1h   v1.37.0-skiff\n"},
		{&autoscalingv2.HorizontalPodAutoscaler{Metadata: &metav1.ObjectMeta{Name: "php-apache", Namespace: "default", CreationTimestamp: created},
			Spec: &autoscalingv2.HorizontalPodAutoscalerSpec{ScaleTargetRef: &autoscalingv2.CrossVersionObjectReference{Kind: "Deployment", Name: "php-apache"},
				MinReplicas: new(int32(1)), MaxReplicas: 10, Metrics: []*autoscalingv2.MetricSpec{
					{Type: "Resource", Resource: &autoscalingv2.ResourceMetricSource{Name: "cpu", Target: &autoscalingv2.MetricTarget{Type: "Utilization", AverageUtilization: new(int32(50))}}},
					{Type: "Resource", Resource: &autoscalingv2.ResourceMetricSource{Name: "memory", Target: &autoscalingv2.MetricTarget{Type: "AverageValue", AverageValue: &metav1.Quantity{String_: "100Mi"}}}}}},
			Status: &autoscalingv2.HorizontalPodAutoscalerStatus{CurrentReplicas: 1, CurrentMetrics: []*autoscalingv2.MetricStatus{
				{Type: "Resource", Resource: &autoscalingv2.ResourceMetricStatus{Name: "cpu", Current: &autoscalingv2.MetricValueStatus{AverageUtilization: new(int32(0))}}}}}},
			Options{Now: now},
			"NAME         REFERENCE               TARGETS                                MINPODS   MAXPODS   REPLICAS   AGE\n" +
				"php-apache   Deployment/php-apache   cpu: 0%/50%, memory: <unknown>/100Mi   1         10        1          3m2s\n"},
		{&storagev1.StorageClass{Metadata: &metav1.ObjectMeta{Name: "local-path", CreationTimestamp: created,
			Annotations: map[string]string{"storageclass.kubernetes.io/is-default-class": "true"}},
			Provisioner: "skiff.dev/local-path", VolumeBindingMode: new("WaitForFirstConsumer")}, Options{Now: now},
			"NAME                   PROVISIONER            RECLAIMPOLICY   VOLUMEBINDINGMODE      ALLOWVOLUMEEXPANSION   AGE\n" +
				"local-path (default)   skiff.dev/local-path   Delete          WaitForFirstConsumer   false                  3m2s\n"},
	}
	for _, tc := range cases {
		var b bytes.Buffer
		k, _ := scheme.ForMessage(tc.obj)
		if err := Table(&b, k, []scheme.Object{tc.obj}, tc.opts); err != nil {
			t.Fatal(err)
		}
		if b.String() != tc.want {
			t.Errorf("%s table:\n got %q\nwant %q", k.Kind, b.String(), tc.want)
		}
	}
}

func TestMoreKindsHaveUpstreamHeaders(t *testing.T) {
	for kind, header := range map[string]string{
		"hpa":                    "NAME   REFERENCE   TARGETS   MINPODS   MAXPODS   REPLICAS   AGE",
		"pdb":                    "NAME   MIN AVAILABLE   MAX UNAVAILABLE   ALLOWED DISRUPTIONS   AGE",
		"priorityclass":          "NAME   VALUE   GLOBAL-DEFAULT   AGE   PREEMPTIONPOLICY",
		"events":                 "LAST SEEN   TYPE   REASON   OBJECT   MESSAGE",
		"rolebindings":           "NAME   ROLE   AGE",
		"clusterroles":           "NAME   CREATED AT",
		"pvc":                    "NAME   STATUS   VOLUME   CAPACITY   ACCESS MODES   STORAGECLASS   VOLUMEATTRIBUTESCLASS   AGE",
		"endpointslices":         "NAME   ADDRESSTYPE   PORTS   ENDPOINTS   AGE",
		"leases":                 "NAME   HOLDER   AGE",
		"controllerrevisions":    "NAME   CONTROLLER   REVISION   AGE",
		"replicationcontrollers": "NAME   DESIRED   CURRENT   READY   AGE",
		"sc":                     "NAME   PROVISIONER   RECLAIMPOLICY   VOLUMEBINDINGMODE   ALLOWVOLUMEEXPANSION   AGE",
		"csidrivers":             "NAME   ATTACHREQUIRED   PODINFOONMOUNT   STORAGECAPACITY   TOKENREQUESTS   REQUIRESREPUBLISH   MODES   AGE",
		"csinodes":               "NAME   DRIVERS   AGE",
		"volumeattachments":      "NAME   ATTACHER   PV    NODE   ATTACHED   AGE",
	} {
		k, err := scheme.Lookup(kind)
		if err != nil {
			t.Fatal(err)
		}
		var b bytes.Buffer
		if err := Table(&b, k, nil, Options{}); err != nil {
			t.Fatal(err)
		}
		if got := strings.TrimRight(b.String(), "\n"); got != header {
			t.Errorf("%s header:\n got %q\nwant %q", kind, got, header)
		}
	}
}

// Sidecars, terminal deleted pods and scheduling gates, as upstream's
// printPod shows them.
func TestPodSummaryAsUpstream(t *testing.T) {
	always := "Always"
	yes := true
	running := func(name string, ready bool, restarts int32) *corev1.ContainerStatus {
		return &corev1.ContainerStatus{Name: name, Ready: ready, Started: &yes, RestartCount: restarts,
			State: &corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}}
	}
	initialized := &corev1.PodCondition{Type: "Initialized", Status: "True"}
	ready := &corev1.PodCondition{Type: "Ready", Status: "True"}
	sidecarPod := func(sidecar, app *corev1.ContainerStatus, conds ...*corev1.PodCondition) *corev1.Pod {
		p := &corev1.Pod{Metadata: &metav1.ObjectMeta{Name: "p"},
			Spec: &corev1.PodSpec{InitContainers: []*corev1.Container{{Name: "proxy", RestartPolicy: &always}},
				Containers: []*corev1.Container{{Name: "app"}}},
			Status: &corev1.PodStatus{Phase: "Running", Conditions: conds, InitContainerStatuses: []*corev1.ContainerStatus{sidecar}}}
		if app != nil {
			p.Status.ContainerStatuses = []*corev1.ContainerStatus{app}
		}
		return p
	}
	for _, tc := range []struct {
		name string
		pod  *corev1.Pod
		want string // READY RESTARTS STATUS
	}{
		{"a started sidecar does not hold the pod in Init",
			sidecarPod(running("proxy", true, 1), running("app", true, 2), initialized, ready), "2/2 3 Running"},
		{"a sidecar not yet started holds it",
			sidecarPod(&corev1.ContainerStatus{Name: "proxy", State: &corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "PodInitializing"}}}, nil),
			"0/2 0 Init:0/1"},
		{"a deleted pod that already succeeded is Completed",
			func() *corev1.Pod {
				p := &corev1.Pod{Metadata: &metav1.ObjectMeta{Name: "p", DeletionTimestamp: metav1.Now()}, Spec: &corev1.PodSpec{Containers: []*corev1.Container{{Name: "app"}}},
					Status: &corev1.PodStatus{Phase: "Succeeded", ContainerStatuses: []*corev1.ContainerStatus{{Name: "app",
						State: &corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{Reason: "Completed"}}}}}}
				return p
			}(), "0/1 0 Completed"},
		{"scheduling gated",
			&corev1.Pod{Metadata: &metav1.ObjectMeta{Name: "p"}, Spec: &corev1.PodSpec{Containers: []*corev1.Container{{Name: "app"}}},
				Status: &corev1.PodStatus{Phase: "Pending", Conditions: []*corev1.PodCondition{{Type: "PodScheduled", Status: "False", Reason: "SchedulingGated"}}}},
			"0/1 0 SchedulingGated"},
	} {
		if got := podReady(tc.pod) + " " + podRestarts(tc.pod) + " " + PodStatus(tc.pod); got != tc.want {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}
}
