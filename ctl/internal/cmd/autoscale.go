package cmd

import (
	"errors"
	"fmt"
	"k8s.io/apimachinery/pkg/api/resource"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"skiff.dev/client"
	autoscalingv2 "skiff.dev/proto/api/autoscaling/v2"
	metav1 "skiff.dev/proto/api/meta/v1"
	"skiff.dev/proto/scheme"
)

type autoscaleFlags struct {
	name       string
	min, max   int32
	cpuPercent int32
	cpu        string
}

// newAutoscale is kubectl's autoscale: an autoscaling/v2 HPA for a
// scalable target, with a cpu Utilization target when one is given.
func newAutoscale(o *Options) *cobra.Command {
	f := autoscaleFlags{min: -1, max: -1, cpuPercent: -1}
	c := &cobra.Command{
		Use:   "autoscale (TYPE NAME | TYPE/NAME) [--min=MINPODS] --max=MAXPODS [--cpu-percent=CPU | --cpu=CPU%]",
		Short: "Auto-scale a deployment, replica set, stateful set, or replication controller",
		RunE: func(cmd *cobra.Command, args []string) error {
			kind, name, err := autoscaleTarget(args)
			if err != nil {
				return err
			}
			hpa, err := f.generate(kind, name, o.namespace())
			if err != nil {
				return err
			}
			api, err := o.client(cmd.Context())
			if err != nil {
				return err
			}
			if _, err := api.Resource(kind, o.namespace()).Get(cmd.Context(), name); err != nil {
				return o.printError(err)
			}
			if _, err := client.For[*autoscalingv2.HorizontalPodAutoscaler](api, o.namespace()).Create(cmd.Context(), hpa); err != nil {
				return o.printError(err)
			}
			fmt.Fprintf(o.streams.Out, "horizontalpodautoscaler.autoscaling/%s autoscaled\n", hpa.GetMetadata().GetName())
			return nil
		},
	}
	fl := c.Flags()
	fl.StringVar(&f.name, "name", "", "The name for the newly created object. If not specified, the name of the input resource will be used.")
	fl.Int32Var(&f.min, "min", -1, "The lower limit for the number of pods that can be set by the autoscaler. If it's not specified or negative, the server will apply a default value.")
	fl.Int32Var(&f.max, "max", -1, "The upper limit for the number of pods that can be set by the autoscaler. Required.")
	fl.Int32Var(&f.cpuPercent, "cpu-percent", -1, "The target average CPU utilization (represented as a percent of requested CPU) over all the pods. If it's not specified or negative, a default autoscaling policy will be used.")
	fl.StringVar(&f.cpu, "cpu", "", "Target CPU utilization over all the pods: a percentage of the request (\"50%\") or an average value (\"500m\").")
	return c
}

func autoscaleTarget(args []string) (*scheme.Kind, string, error) {
	var typ, name string
	switch {
	case len(args) == 1 && strings.Contains(args[0], "/"):
		typ, name, _ = strings.Cut(args[0], "/")
	case len(args) == 2:
		typ, name = args[0], args[1]
	default:
		return nil, "", errors.New("you must specify exactly one resource to autoscale: (TYPE NAME | TYPE/NAME)")
	}
	k, err := scheme.Lookup(typ)
	if err != nil {
		return nil, "", err
	}
	if !hasSub(k, "scale") {
		return nil, "", fmt.Errorf("cannot autoscale a %s: it has no scale subresource", k.Kind)
	}
	if name == "" {
		return nil, "", errors.New("you must specify the name of the resource to autoscale")
	}
	return k, name, nil
}

// generate is kubectl's HorizontalPodAutoscalerV2 generator.
func (f autoscaleFlags) generate(k *scheme.Kind, target, ns string) (*autoscalingv2.HorizontalPodAutoscaler, error) {
	if f.max < 1 {
		return nil, fmt.Errorf("--max=MAXPODS is required and must be at least 1, max: %d", f.max)
	}
	if f.min > f.max {
		return nil, fmt.Errorf("--max=MAXPODS must be larger or equal to --min=MINPODS, max: %d, min: %d", f.max, f.min)
	}
	if f.cpu != "" && f.cpuPercent >= 0 {
		return nil, errors.New("--cpu and --cpu-percent cannot both be set")
	}
	name := f.name
	if name == "" {
		name = target
	}
	hpa := &autoscalingv2.HorizontalPodAutoscaler{
		Metadata: &metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: &autoscalingv2.HorizontalPodAutoscalerSpec{
			ScaleTargetRef: &autoscalingv2.CrossVersionObjectReference{ApiVersion: k.APIVersion(), Kind: k.Kind, Name: target},
			MaxReplicas:    f.max,
		},
	}
	if f.min >= 0 {
		m := f.min
		hpa.Spec.MinReplicas = &m
	}
	var mt *autoscalingv2.MetricTarget
	switch {
	case f.cpuPercent >= 0:
		p := f.cpuPercent
		mt = &autoscalingv2.MetricTarget{Type: "Utilization", AverageUtilization: &p}
	case strings.HasSuffix(f.cpu, "%"):
		n, err := strconv.ParseInt(strings.TrimSuffix(f.cpu, "%"), 10, 32)
		if err != nil || n < 0 {
			return nil, fmt.Errorf("--cpu: %q is not a percentage (\"50%%\") or a quantity (\"500m\")", f.cpu)
		}
		p := int32(n)
		mt = &autoscalingv2.MetricTarget{Type: "Utilization", AverageUtilization: &p}
	case f.cpu != "":
		q, err := parseQuantity(f.cpu)
		if err != nil {
			return nil, fmt.Errorf("--cpu: %q is not a percentage (\"50%%\") or a quantity (\"500m\")", f.cpu)
		}
		mt = &autoscalingv2.MetricTarget{Type: "AverageValue", AverageValue: &metav1.Quantity{String_: q}}
	}
	if mt != nil {
		hpa.Spec.Metrics = []*autoscalingv2.MetricSpec{{Type: "Resource",
			Resource: &autoscalingv2.ResourceMetricSource{Name: "cpu", Target: mt}}}
	}
	return hpa, nil
}

func parseQuantity(s string) (string, error) {
	q, err := resource.ParseQuantity(s)
	if err != nil {
		return "", err
	}
	return q.String(), nil
}
