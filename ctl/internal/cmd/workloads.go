package cmd

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"skiff.dev/client"
	appsv1 "skiff.dev/proto/api/apps/v1"
	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
	policyv1 "skiff.dev/proto/api/policy/v1"
	"skiff.dev/proto/apierrors"
	"skiff.dev/proto/codec"
	"skiff.dev/proto/scheme"
	"skiff.dev/proto/strategic"
)

// podSpecOf finds the pod spec of a pod or a workload's template.
func podSpecOf(obj scheme.Object) *corev1.PodSpec {
	switch o := obj.(type) {
	case *corev1.Pod:
		return o.GetSpec()
	case *appsv1.Deployment:
		return o.GetSpec().GetTemplate().GetSpec()
	case *appsv1.ReplicaSet:
		return o.GetSpec().GetTemplate().GetSpec()
	case *appsv1.StatefulSet:
		return o.GetSpec().GetTemplate().GetSpec()
	case *appsv1.DaemonSet:
		return o.GetSpec().GetTemplate().GetSpec()
	case *corev1.ReplicationController:
		return o.GetSpec().GetTemplate().GetSpec()
	}
	return nil
}

func newSet(o *Options) *cobra.Command {
	set := &cobra.Command{Use: "set SUBCOMMAND", Short: "Set specific features on objects"}
	image := &cobra.Command{
		Use:   "image (TYPE NAME | TYPE/NAME) CONTAINER_NAME_1=CONTAINER_IMAGE_1 ... CONTAINER_NAME_N=CONTAINER_IMAGE_N",
		Short: "Update the image of a pod template",
		RunE: func(cmd *cobra.Command, args []string) error {
			var res []string
			images := map[string]string{}
			for _, a := range args {
				if k, v, ok := strings.Cut(a, "="); ok {
					images[k] = v
				} else {
					res = append(res, a)
				}
			}
			if len(images) == 0 {
				return fmt.Errorf("at least one image update is required")
			}
			ds, names, err := o.resolveTargets(cmd, res, "", false)
			if err != nil {
				return err
			}
			for i, d := range ds {
				for _, n := range names[i] {
					obj, err := d.Get(cmd.Context(), n)
					if err != nil {
						return o.printError(err)
					}
					before, err := codec.MarshalJSON(obj)
					if err != nil {
						return err
					}
					spec := podSpecOf(obj)
					if spec == nil {
						return fmt.Errorf("%s has no pod template", d.Kind().Kind)
					}
					found := map[string]bool{}
					for _, c := range append(append([]*corev1.Container{}, spec.InitContainers...), spec.Containers...) {
						if img, ok := images[c.Name]; ok {
							c.Image, found[c.Name] = img, true
						} else if img, ok := images["*"]; ok {
							c.Image, found["*"] = img, true
						}
					}
					for name := range images {
						if !found[name] {
							return fmt.Errorf("unable to find container named %q", name)
						}
					}
					// A strategic merge patch of just the images, as kubectl
					// sends: a controller writing the object meanwhile (the
					// deployment controller's revision annotation) is no
					// conflict.
					after, err := codec.MarshalJSON(obj)
					if err != nil {
						return err
					}
					patch, err := strategic.ThreeWay(d.Kind(), before, after, before, true)
					if err != nil {
						return err
					}
					if _, err := d.Patch(cmd.Context(), n, "strategic", patch, "", false); err != nil {
						return o.printError(err)
					}
					fmt.Fprintf(o.streams.Out, "%s image updated\n", resourceName(d.Kind(), n))
				}
			}
			return nil
		},
	}
	set.AddCommand(image)
	return set
}

func newWait(o *Options) *cobra.Command {
	var forCond, selector string
	var timeout time.Duration
	var all bool
	c := &cobra.Command{
		Use:   "wait ([-f FILENAME] | resource.group/resource.name | resource.group [(-l label | --all)]) [--for=delete|--for condition=available|--for=jsonpath='{}'=value]",
		Short: "Wait for a specific condition on one or many resources",
		RunE: func(cmd *cobra.Command, args []string) error {
			check, err := waitCheck(forCond)
			if err != nil {
				return err
			}
			ds, names, err := o.resolveTargets(cmd, args, selector, all)
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			for i, d := range ds {
				for _, n := range names[i] {
					for {
						obj, err := d.Get(ctx, n)
						gone := apierrors.IsNotFound(err)
						if err != nil && !gone {
							// The apiserver may see the deadline pass a moment before we do.
							if ctx.Err() != nil || apierrors.IsTimeout(err) {
								return fmt.Errorf("timed out waiting for the condition on %s", resourcePlural(d.Kind(), n))
							}
							return o.printError(err)
						}
						if ok, err := check(obj, gone); err != nil {
							return err
						} else if ok {
							fmt.Fprintf(o.streams.Out, "%s condition met\n", resourceName(d.Kind(), n))
							break
						}
						select {
						case <-ctx.Done():
							return fmt.Errorf("timed out waiting for the condition on %s", resourcePlural(d.Kind(), n))
						case <-time.After(200 * time.Millisecond):
						}
					}
				}
			}
			return nil
		},
	}
	c.Flags().StringVar(&forCond, "for", "", "The condition to wait on: [delete|condition=condition-name[=condition-value]|jsonpath='{JSONPath expression}'=[JSONPath value]].")
	c.Flags().DurationVar(&timeout, "timeout", 30*time.Second, "The length of time to wait before giving up.")
	c.Flags().StringVarP(&selector, "selector", "l", "", "Label selector to filter on.")
	c.Flags().BoolVar(&all, "all", false, "Select all resources in the namespace of the specified resource types")
	return c
}

func resourcePlural(k *scheme.Kind, name string) string { return k.GroupResource() + "/" + name }

// waitCheck compiles --for into a test of the object (nil when gone).
func waitCheck(f string) (func(obj scheme.Object, gone bool) (bool, error), error) {
	switch {
	case f == "delete":
		return func(_ scheme.Object, gone bool) (bool, error) { return gone, nil }, nil
	case strings.HasPrefix(f, "condition="):
		cond := strings.TrimPrefix(f, "condition=")
		name, want, ok := strings.Cut(cond, "=")
		if !ok {
			want = "true"
		}
		return func(obj scheme.Object, gone bool) (bool, error) {
			if gone {
				return false, fmt.Errorf("object was deleted while waiting for %s", name)
			}
			doc, err := jsonOf(obj)
			if err != nil {
				return false, err
			}
			st, _ := doc["status"].(map[string]any)
			conds, _ := st["conditions"].([]any)
			for _, c := range conds {
				m, _ := c.(map[string]any)
				if strings.EqualFold(fmt.Sprint(m["type"]), name) && strings.EqualFold(fmt.Sprint(m["status"]), want) {
					return true, nil
				}
			}
			return false, nil
		}, nil
	case strings.HasPrefix(f, "jsonpath="):
		expr := strings.TrimPrefix(f, "jsonpath=")
		path, want, hasWant := strings.Cut(strings.Trim(expr, "'"), "=")
		path = strings.TrimSuffix(strings.TrimPrefix(strings.Trim(path, "'"), "{"), "}")
		return func(obj scheme.Object, gone bool) (bool, error) {
			if gone {
				return false, fmt.Errorf("object was deleted")
			}
			doc, err := jsonOf(obj)
			if err != nil {
				return false, err
			}
			v, ok := lookupPath(doc, path)
			if !hasWant {
				return ok, nil
			}
			return ok && fmt.Sprint(v) == want, nil
		}, nil
	}
	return nil, fmt.Errorf("--for must be delete, condition=NAME[=VALUE] or jsonpath='{.path}'=VALUE, not %q", f)
}

func jsonOf(obj scheme.Object) (map[string]any, error) {
	b, err := codec.MarshalJSON(obj)
	if err != nil {
		return nil, err
	}
	var doc map[string]any
	return doc, json.Unmarshal(b, &doc)
}

// lookupPath evaluates a dotted JSONPath without filters: .status.phase,
// .spec.containers[0].image.
func lookupPath(doc any, path string) (any, bool) {
	cur := doc
	for _, part := range strings.Split(strings.TrimPrefix(path, "."), ".") {
		if part == "" {
			continue
		}
		name, idx, hasIdx := strings.Cut(part, "[")
		if name != "" {
			m, ok := cur.(map[string]any)
			if !ok {
				return nil, false
			}
			if cur, ok = m[name]; !ok {
				return nil, false
			}
		}
		if hasIdx {
			var i int
			if _, err := fmt.Sscanf(strings.TrimSuffix(idx, "]"), "%d", &i); err != nil {
				return nil, false
			}
			l, ok := cur.([]any)
			if !ok || i < 0 || i >= len(l) {
				return nil, false
			}
			cur = l[i]
		}
	}
	return cur, true
}

func newDrain(o *Options) *cobra.Command {
	var ignoreDS, deleteEmptyDir, force bool
	var timeout time.Duration
	var grace int64 = -1
	c := &cobra.Command{
		Use:   "drain NODE",
		Short: "Drain node in preparation for maintenance",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			node := args[0]
			if err := newCordon(o, true).RunE(cmd, []string{node}); err != nil {
				return err
			}
			cl, err := o.client(cmd.Context())
			if err != nil {
				return err
			}
			pods, err := client.For[*corev1.Pod](cl, "").List(cmd.Context(), client.ListOptions{FieldSelector: "spec.nodeName=" + node})
			if err != nil {
				return o.printError(err)
			}
			var evict []*corev1.Pod
			var dsPods, errs []string
			for _, p := range pods.Items {
				m := p.Metadata
				ref := metav1.GetControllerOf(m)
				switch {
				case m.Annotations["kubernetes.io/config.mirror"] != "":
					continue
				case p.GetStatus().GetPhase() == "Succeeded" || p.GetStatus().GetPhase() == "Failed":
				case ref != nil && ref.Kind == "DaemonSet":
					if !ignoreDS {
						errs = append(errs, fmt.Sprintf("cannot delete DaemonSet-managed Pods (use --ignore-daemonsets to ignore): %s/%s", m.Namespace, m.Name))
					}
					dsPods = append(dsPods, m.Namespace+"/"+m.Name)
					continue
				case ref == nil && !force:
					errs = append(errs, fmt.Sprintf("cannot delete Pods that declare no controller (use --force to override): %s/%s", m.Namespace, m.Name))
					continue
				}
				for _, v := range p.GetSpec().GetVolumes() {
					if v.GetVolumeSource().GetEmptyDir() != nil && !deleteEmptyDir {
						errs = append(errs, fmt.Sprintf("cannot delete Pods with local storage (use --delete-emptydir-data to override): %s/%s", m.Namespace, m.Name))
					}
				}
				evict = append(evict, p)
			}
			if len(errs) > 0 {
				fmt.Fprintf(o.streams.Err, "error: unable to drain node %q due to error: %s, continuing command...\n", node, strings.Join(errs, ", "))
				return exitError{code: 1}
			}
			if len(dsPods) > 0 && ignoreDS {
				fmt.Fprintf(o.streams.Err, "Warning: ignoring DaemonSet-managed Pods: %s\n", strings.Join(dsPods, ", "))
			}
			ctx, cancel := context.WithCancel(cmd.Context())
			if timeout > 0 {
				ctx, cancel = context.WithTimeout(cmd.Context(), timeout)
			}
			defer cancel()
			for _, p := range evict {
				m := p.Metadata
				fmt.Fprintf(o.streams.Out, "evicting pod %s/%s\n", m.Namespace, m.Name)
				for {
					e := &policyv1.Eviction{Metadata: &metav1.ObjectMeta{Namespace: m.Namespace, Name: m.Name}}
					if grace >= 0 {
						e.DeleteOptions = &metav1.DeleteOptions{GracePeriodSeconds: &grace}
					}
					err := cl.Evict(ctx, e)
					if err == nil || apierrors.IsNotFound(err) {
						fmt.Fprintf(o.streams.Out, "pod/%s evicted\n", m.Name)
						break
					}
					if !apierrors.IsTooManyRequests(err) {
						return o.printError(err)
					}
					fmt.Fprintf(o.streams.Err, "error when evicting pods/%q -n %q (will retry after 5s): %s\n", m.Name, m.Namespace, apierrors.Message(err))
					select {
					case <-ctx.Done():
						return fmt.Errorf("drain did not complete within %s", timeout)
					case <-time.After(5 * time.Second):
					}
				}
			}
			fmt.Fprintf(o.streams.Out, "node/%s drained\n", node)
			return nil
		},
	}
	c.Flags().BoolVar(&ignoreDS, "ignore-daemonsets", false, "Ignore DaemonSet-managed pods.")
	c.Flags().BoolVar(&deleteEmptyDir, "delete-emptydir-data", false, "Continue even if there are pods using emptyDir (local data that will be deleted when the node is drained).")
	c.Flags().BoolVar(&force, "force", false, "Continue even if there are pods that do not declare a controller.")
	c.Flags().DurationVar(&timeout, "timeout", 10*time.Minute, "The length of time to wait before giving up, zero means infinite")
	c.Flags().Int64Var(&grace, "grace-period", -1, "Period of time in seconds given to each pod to terminate gracefully. If negative, the default value specified in the pod will be used.")
	return c
}
