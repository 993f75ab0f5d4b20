package app

import (
	"context"
	"strings"
	"testing"
)

// Bad flags are refused before anything connects, naming the flag.
func TestBadFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		err  string
	}{
		{[]string{"--controllers", "*,-bogus"}, `--controllers: "bogus" is not in the list of known controllers`},
		{[]string{"--concurrent-gc-syncs", "0"}, "--concurrent-gc-syncs: must be at least 1, got 0"},
		{[]string{"--node-monitor-grace-period", "0s"}, "--node-monitor-grace-period: must be positive"},
		{[]string{"--terminated-pod-gc-threshold", "-1"}, "--terminated-pod-gc-threshold: must not be negative"},
		{[]string{"--allocate-node-cidrs", "--cluster-cidr", "10.0.0.0"}, `--cluster-cidr: "10.0.0.0" is not a CIDR`},
		{[]string{"--allocate-node-cidrs", "--node-cidr-mask-size", "8"}, "--node-cidr-mask-size: 8 must lie between"},
		{[]string{"--resource-quota-sync-period", "0s"}, "--resource-quota-sync-period: must be positive, got 0s"},
		{[]string{"--horizontal-pod-autoscaler-sync-period", "-1s"}, "--horizontal-pod-autoscaler-sync-period: must be positive"},
		{[]string{"--horizontal-pod-autoscaler-tolerance", "-0.1"}, "--horizontal-pod-autoscaler-tolerance: must not be negative"},
		{[]string{"--horizontal-pod-autoscaler-downscale-stabilization", "-5m"}, "--horizontal-pod-autoscaler-downscale-stabilization: must not be negative"},
		{[]string{"--kubeconfig", "/nonexistent/config"}, "/nonexistent/config"},
	} {
		cmd := NewCommand()
		cmd.SetArgs(tc.args)
		cmd.SetContext(context.Background())
		err := cmd.Execute()
		if err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("%v: err = %v, want %q", tc.args, err, tc.err)
		}
	}
}

// Upstream's defaults.
func TestDefaults(t *testing.T) {
	o := NewOptions()
	co := o.ControllerOptions(nil)
	if o.LeaseName != "kube-controller-manager" || o.LeaseNamespace != "kube-system" || !o.LeaderElect {
		t.Errorf("leader election %s/%s %v", o.LeaseNamespace, o.LeaseName, o.LeaderElect)
	}
	if co.NodeMonitorGracePeriod.String() != "40s" || co.ClusterCIDR != "10.244.0.0/16" || co.NodeCIDRMaskSize != 24 ||
		co.TerminatedPodGCThreshold != 12500 || co.Workers("garbagecollector", 1) != 20 || co.Workers("deployment", 1) != 5 ||
		co.ResourceQuotaSyncPeriod.String() != "5m0s" || co.HPA.SyncPeriod.String() != "15s" || co.HPA.Tolerance != 0.1 ||
		co.HPA.DownscaleStabilization.String() != "5m0s" || co.Workers("daemonset", 1) != 2 || co.Workers("job", 1) != 5 {
		t.Errorf("defaults: %+v", co)
	}
}
