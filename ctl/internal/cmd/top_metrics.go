package cmd

import (
	"context"
	"errors"
	"fmt"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"k8s.io/apimachinery/pkg/api/resource"

	"skiff.dev/client"
	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
	metricsv1beta1 "skiff.dev/proto/api/metrics/v1beta1"
	"skiff.dev/proto/apierrors"
)

func parseQuantity(s string) (string, error) {
	q, err := resource.ParseQuantity(s)
	if err != nil {
		return "", err
	}
	return q.String(), nil
}

// newTopMetrics is `top` reading metrics.k8s.io as kubectl does; where the
// apiserver does not serve it, the kubelets' summaries (top.go) answer.
func newTopMetrics(o *Options) *cobra.Command {
	c := newTop(o)
	for _, sub := range c.Commands() {
		fallback := sub.RunE
		switch sub.Name() {
		case "pod":
			sub.RunE = func(cmd *cobra.Command, args []string) error {
				f := topPodFlags{}
				fl := cmd.Flags()
				f.selector, _ = fl.GetString("selector")
				f.fieldSelector, _ = fl.GetString("field-selector")
				f.sortBy, _ = fl.GetString("sort-by")
				f.containers, _ = fl.GetBool("containers")
				f.allNamespaces, _ = fl.GetBool("all-namespaces")
				f.noHeaders, _ = fl.GetBool("no-headers")
				err := o.topPodFromMetricsAPI(cmd.Context(), f, args)
				if errors.Is(err, errNoMetricsAPI) {
					return fallback(cmd, args)
				}
				return err
			}
		}
	}
	return c
}

var errNoMetricsAPI = errors.New("metrics API not available")

func metricsAPIMissing(err error) bool {
	if status.Code(err) == codes.Unimplemented {
		return true
	}
	return apierrors.ReasonOf(err) == apierrors.ReasonNotFound && containsAny(err.Error(), "could not find the requested resource")
}

func containsAny(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return true
		}
	}
	return false
}

func (o *Options) topPodFromMetricsAPI(ctx context.Context, f topPodFlags, args []string) error {
	if err := validSortBy(f.sortBy); err != nil {
		return err
	}
	if len(args) > 1 {
		return errors.New("pod [NAME | -l label]")
	}
	if len(args) == 1 && (f.selector != "" || f.fieldSelector != "") {
		return errors.New("only one of NAME or selector can be provided")
	}
	api, err := o.client(ctx)
	if err != nil {
		return err
	}
	ns := o.namespace()
	if f.allNamespaces {
		ns = ""
	}
	typed := client.For[*metricsv1beta1.PodMetrics](api, ns)
	var items []*metricsv1beta1.PodMetrics
	if len(args) == 1 {
		m, err := client.For[*metricsv1beta1.PodMetrics](api, o.namespace()).Get(ctx, args[0])
		if metricsAPIMissing(err) {
			return errNoMetricsAPI
		}
		if err != nil {
			return o.printError(err)
		}
		items = []*metricsv1beta1.PodMetrics{m}
	} else {
		l, err := typed.List(ctx, client.ListOptions{LabelSelector: f.selector, FieldSelector: f.fieldSelector})
		if metricsAPIMissing(err) {
			return errNoMetricsAPI
		}
		if err != nil {
			return o.printError(err)
		}
		items = l.Items
	}
	if len(items) == 0 {
		// As kubectl: tell an empty namespace from pods without metrics.
		pods, err := client.For[*corev1.Pod](api, ns).List(ctx, client.ListOptions{LabelSelector: f.selector, FieldSelector: f.fieldSelector})
		if err == nil && len(pods.Items) == 0 {
			if f.allNamespaces {
				fmt.Fprintln(o.streams.Err, "No resources found")
			} else {
				fmt.Fprintf(o.streams.Err, "No resources found in %s namespace.\n", o.namespace())
			}
			return nil
		}
		return errMetricsNotAvailable
	}
	printPodMetrics(o.streams.Out, podMetricsFrom(items), f)
	return nil
}

// podMetricsFrom turns PodMetrics into what `top pod` prints.
func podMetricsFrom(items []*metricsv1beta1.PodMetrics) []podMetrics {
	metrics := make([]podMetrics, 0, len(items))
	for _, m := range items {
		pm := podMetrics{namespace: m.GetMetadata().GetNamespace(), name: m.GetMetadata().GetName()}
		for _, c := range m.GetContainers() {
			u := usageFromList(c.GetUsage())
			pm.containers = append(pm.containers, containerMetrics{name: c.GetName(), usage: u})
			pm.total.add(u)
		}
		metrics = append(metrics, pm)
	}
	return metrics
}

func usageFromList(l map[string]*metav1.Quantity) usage {
	var u usage
	if q, err := resource.ParseQuantity(l["cpu"].GetString_()); err == nil {
		u.nanoCores = uint64(q.ScaledValue(resource.Nano))
	}
	if q, err := resource.ParseQuantity(l["memory"].GetString_()); err == nil {
		u.bytes = uint64(q.Value())
	}
	return u
}
