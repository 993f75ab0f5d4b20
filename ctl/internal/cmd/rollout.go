package cmd

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"sort"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"skiff.dev/client"
	"skiff.dev/ctl/internal/printers"
	appsv1 "skiff.dev/proto/api/apps/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
	"skiff.dev/proto/codec"
	"skiff.dev/proto/scheme"
)

func newRollout(o *Options) *cobra.Command {
	c := &cobra.Command{Use: "rollout SUBCOMMAND", Short: "Manage the rollout of a resource (deployments, daemonsets, statefulsets)"}
	one := func(cmd *cobra.Command, args []string) (*client.Dynamic, scheme.Object, error) {
		targets, err := parseTargets(args)
		if err != nil {
			return nil, nil, err
		}
		if len(targets) != 1 || len(targets[0].names) != 1 {
			return nil, nil, fmt.Errorf("rollout takes one resource: TYPE NAME or TYPE/NAME")
		}
		t := targets[0]
		switch t.kind.Kind {
		case "Deployment", "DaemonSet", "StatefulSet":
		default:
			return nil, nil, fmt.Errorf("no status viewer has been implemented for %s", t.kind.Kind)
		}
		cl, err := o.client(cmd.Context())
		if err != nil {
			return nil, nil, err
		}
		d := cl.Resource(t.kind, o.namespace())
		obj, err := d.Get(cmd.Context(), t.names[0])
		if err != nil {
			return nil, nil, o.printError(err)
		}
		return d, obj, nil
	}

	var watch bool
	var timeout time.Duration
	status := &cobra.Command{
		Use:   "status (TYPE NAME | TYPE/NAME)",
		Short: "Show the status of the rollout",
		RunE: func(cmd *cobra.Command, args []string) error {
			d, obj, err := one(cmd, args)
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			if timeout > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, timeout)
				defer cancel()
			}
			last := ""
			for {
				msg, done, err := rolloutStatus(obj)
				if err != nil {
					return err
				}
				if msg != last {
					fmt.Fprint(o.streams.Out, msg)
					last = msg
				}
				if done || !watch {
					return nil
				}
				// Wait for the next change of the object.
				w, err := d.Watch(ctx, client.ListOptions{FieldSelector: "metadata.name=" + obj.GetMetadata().GetName(), ResourceVersion: obj.GetMetadata().GetResourceVersion()})
				if err != nil {
					return o.printError(err)
				}
				ev, ok := <-w.Events()
				w.Stop()
				if !ok {
					if ctx.Err() != nil {
						return fmt.Errorf("timed out waiting for the condition")
					}
					if obj, err = d.Get(ctx, obj.GetMetadata().GetName()); err != nil {
						return o.printError(err)
					}
					continue
				}
				if ev.Type == client.Deleted {
					return fmt.Errorf("object has been deleted")
				}
				if ev.Type != client.Bookmark {
					obj = ev.Object
				}
			}
		},
	}
	status.Flags().BoolVarP(&watch, "watch", "w", true, "Watch the status of the rollout until it's done.")
	status.Flags().DurationVar(&timeout, "timeout", 0, "The length of time to wait before ending watch, zero means never.")

	patchVerb := func(use, verb string, patch func(obj scheme.Object) (map[string]any, error)) *cobra.Command {
		return &cobra.Command{
			Use:   use + " (TYPE NAME | TYPE/NAME)",
			Short: fmt.Sprintf("Mark the provided resource as %s", verb),
			RunE: func(cmd *cobra.Command, args []string) error {
				d, obj, err := one(cmd, args)
				if err != nil {
					return err
				}
				p, err := patch(obj)
				if err != nil {
					return err
				}
				b, _ := json.Marshal(p)
				if _, err := d.Patch(cmd.Context(), obj.GetMetadata().GetName(), "merge", b, "", false); err != nil {
					return o.printError(err)
				}
				fmt.Fprintf(o.streams.Out, "%s %s\n", resourceName(d.Kind(), obj.GetMetadata().GetName()), verb)
				return nil
			},
		}
	}
	pause := func(paused bool, verb string) func(obj scheme.Object) (map[string]any, error) {
		return func(obj scheme.Object) (map[string]any, error) {
			dep, ok := obj.(*appsv1.Deployment)
			if !ok {
				return nil, fmt.Errorf("%s is not supported for %T", verb, obj)
			}
			if dep.GetSpec().GetPaused() == paused {
				return nil, fmt.Errorf("deployments.apps %q is not %s", dep.Metadata.Name, map[bool]string{true: "resumed", false: "paused"}[paused])
			}
			return map[string]any{"spec": map[string]any{"paused": paused}}, nil
		}
	}
	restart := patchVerb("restart", "restarted", func(scheme.Object) (map[string]any, error) {
		return map[string]any{"spec": map[string]any{"template": map[string]any{"metadata": map[string]any{"annotations": map[string]string{
			"kubectl.kubernetes.io/restartedAt": time.Now().Format(time.RFC3339)}}}}}, nil
	})

	var toRevision int64
	history := &cobra.Command{
		Use:   "history (TYPE NAME | TYPE/NAME) [--revision=N]",
		Short: "View rollout history",
		RunE: func(cmd *cobra.Command, args []string) error {
			_, obj, err := one(cmd, args)
			if err != nil {
				return err
			}
			revs, err := o.revisions(cmd, obj)
			if err != nil {
				return err
			}
			k, _ := scheme.ForMessage(obj)
			fmt.Fprintf(o.streams.Out, "%s \n", resourceName(k, obj.GetMetadata().GetName()))
			tw := printers.NewTabWriter(o.streams.Out)
			fmt.Fprintln(tw, "REVISION\tCHANGE-CAUSE")
			for _, r := range revs {
				cause := r.cause
				if cause == "" {
					cause = "<none>"
				}
				fmt.Fprintf(tw, "%d\t%s\n", r.number, cause)
			}
			tw.Flush()
			fmt.Fprintln(o.streams.Out)
			return nil
		},
	}
	undo := &cobra.Command{
		Use:   "undo (TYPE NAME | TYPE/NAME) [--to-revision=N]",
		Short: "Undo a previous rollout",
		RunE: func(cmd *cobra.Command, args []string) error {
			d, obj, err := one(cmd, args)
			if err != nil {
				return err
			}
			revs, err := o.revisions(cmd, obj)
			if err != nil {
				return err
			}
			var target *revision
			switch {
			case toRevision > 0:
				for i := range revs {
					if revs[i].number == toRevision {
						target = &revs[i]
					}
				}
				if target == nil {
					return fmt.Errorf("unable to find specified revision %d in history", toRevision)
				}
			case len(revs) >= 2:
				target = &revs[len(revs)-2]
			default:
				return fmt.Errorf("no rollout history found for %s", resourceName(d.Kind(), obj.GetMetadata().GetName()))
			}
			b, typ := target.patch, "merge"
			if target.patch == nil {
				// Deployments, as kubectl: a JSON patch replaces the template
				// whole (a merge patch could not drop keys the revision lacks,
				// such as rollout restart's annotation, and the controller
				// would not recognise the old ReplicaSet) and brings back the
				// revision's annotations (its change-cause).
				annotations := map[string]string{}
				maps.Copy(annotations, obj.GetMetadata().GetAnnotations())
				for k, v := range target.annotations {
					if !rollbackSkipsAnnotation[k] {
						annotations[k] = v
					}
				}
				b, _ = json.Marshal([]map[string]any{
					{"op": "replace", "path": "/spec/template", "value": target.template},
					{"op": "add", "path": "/metadata/annotations", "value": annotations},
				})
				typ = "json"
			}
			if _, err := d.Patch(cmd.Context(), obj.GetMetadata().GetName(), typ, b, "", false); err != nil {
				return o.printError(err)
			}
			fmt.Fprintf(o.streams.Out, "%s rolled back\n", resourceName(d.Kind(), obj.GetMetadata().GetName()))
			return nil
		},
	}
	undo.Flags().Int64Var(&toRevision, "to-revision", 0, "The revision to rollback to. Default to 0 (last revision).")
	c.AddCommand(status, history, undo, restart,
		patchVerb("pause", "paused", pause(true, "paused")), patchVerb("resume", "resumed", pause(false, "resumed")))
	return c
}

type revision struct {
	number      int64
	cause       string
	template    any
	annotations map[string]string // the ReplicaSet's
	patch       []byte            // ControllerRevision data, "$patch" directives removed
}

// rollbackSkipsAnnotation are the ReplicaSet annotations kubectl does not
// copy back onto a Deployment it rolls back: the controller's own.
var rollbackSkipsAnnotation = map[string]bool{
	"kubectl.kubernetes.io/last-applied-configuration": true,
	"deployment.kubernetes.io/revision":                true,
	"deployment.kubernetes.io/revision-history":        true,
	"deployment.kubernetes.io/desired-replicas":        true,
	"deployment.kubernetes.io/max-replicas":            true,
	"deprecated.deployment.rollback.to":                true,
}

// revisions are a Deployment's ReplicaSets by their revision annotation
// (the deployment controller writes them), oldest first.
func (o *Options) revisions(cmd *cobra.Command, obj scheme.Object) ([]revision, error) {
	cl, err := o.client(cmd.Context())
	if err != nil {
		return nil, err
	}
	uid := obj.GetMetadata().GetUid()
	var out []revision
	if _, ok := obj.(*appsv1.Deployment); ok {
		rss, err := client.For[*appsv1.ReplicaSet](cl, obj.GetMetadata().GetNamespace()).List(cmd.Context(), client.ListOptions{})
		if err != nil {
			return nil, o.printError(err)
		}
		for _, rs := range rss.Items {
			if ref := metav1.GetControllerOf(rs.Metadata); ref == nil || ref.Uid != uid {
				continue
			}
			n, _ := strconv.ParseInt(rs.Metadata.Annotations["deployment.kubernetes.io/revision"], 10, 64)
			js, _ := codec.MarshalFields(rs.Spec.Template)
			var tmpl map[string]any
			json.Unmarshal(js, &tmpl)
			if md, ok := tmpl["metadata"].(map[string]any); ok {
				if l, ok := md["labels"].(map[string]any); ok {
					delete(l, "pod-template-hash")
				}
			}
			out = append(out, revision{number: n, cause: rs.Metadata.Annotations["kubernetes.io/change-cause"], template: tmpl,
				annotations: rs.Metadata.Annotations})
		}
	} else {
		crs, err := client.For[*appsv1.ControllerRevision](cl, obj.GetMetadata().GetNamespace()).List(cmd.Context(), client.ListOptions{})
		if err != nil {
			return nil, o.printError(err)
		}
		for _, cr := range crs.Items {
			if ref := metav1.GetControllerOf(cr.Metadata); ref == nil || ref.Uid != uid {
				continue
			}
			r := revision{number: cr.Revision, cause: cr.Metadata.Annotations["kubernetes.io/change-cause"], patch: revisionPatch(cr.GetData().GetRaw())}
			// As for Deployments, undo replaces the template whole (a merge
			// patch could not drop what the revision lacks).
			var doc struct {
				Spec struct {
					Template map[string]any `json:"template"`
				} `json:"spec"`
			}
			if r.patch != nil && json.Unmarshal(r.patch, &doc) == nil && doc.Spec.Template != nil {
				r.template, r.patch = doc.Spec.Template, nil
			}
			out = append(out, r)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].number < out[j].number })
	return out, nil
}

// rolloutStatus is upstream's status viewer for each kind: the message to
// print and whether the rollout is done.
func rolloutStatus(obj scheme.Object) (string, bool, error) {
	switch o := obj.(type) {
	case *appsv1.Deployment:
		st, sp, name := o.GetStatus(), o.GetSpec(), o.Metadata.Name
		if o.Metadata.Generation <= st.GetObservedGeneration() {
			for _, c := range st.GetConditions() {
				if c.Type == "Progressing" && c.Reason == "ProgressDeadlineExceeded" {
					return "", false, fmt.Errorf("deployment %q exceeded its progress deadline", name)
				}
			}
			want := sp.GetReplicas()
			switch {
			case st.GetUpdatedReplicas() < want:
				return fmt.Sprintf("Waiting for deployment %q rollout to finish: %d out of %d new replicas have been updated...\n", name, st.GetUpdatedReplicas(), want), false, nil
			case st.GetReplicas() > st.GetUpdatedReplicas():
				return fmt.Sprintf("Waiting for deployment %q rollout to finish: %d old replicas are pending termination...\n", name, st.GetReplicas()-st.GetUpdatedReplicas()), false, nil
			case st.GetAvailableReplicas() < st.GetUpdatedReplicas():
				return fmt.Sprintf("Waiting for deployment %q rollout to finish: %d of %d updated replicas are available...\n", name, st.GetAvailableReplicas(), st.GetUpdatedReplicas()), false, nil
			}
			return fmt.Sprintf("deployment %q successfully rolled out\n", name), true, nil
		}
		return "Waiting for deployment spec update to be observed...\n", false, nil
	case *appsv1.DaemonSet:
		st, name := o.GetStatus(), o.Metadata.Name
		if t := o.GetSpec().GetUpdateStrategy().GetType(); t != "" && t != "RollingUpdate" {
			return "", true, fmt.Errorf("rollout status is only available for RollingUpdate strategy type")
		}
		if o.Metadata.Generation <= st.GetObservedGeneration() {
			switch {
			case st.GetUpdatedNumberScheduled() < st.GetDesiredNumberScheduled():
				return fmt.Sprintf("Waiting for daemon set %q rollout to finish: %d out of %d new pods have been updated...\n", name, st.GetUpdatedNumberScheduled(), st.GetDesiredNumberScheduled()), false, nil
			case st.GetNumberAvailable() < st.GetDesiredNumberScheduled():
				return fmt.Sprintf("Waiting for daemon set %q rollout to finish: %d of %d updated pods are available...\n", name, st.GetNumberAvailable(), st.GetDesiredNumberScheduled()), false, nil
			}
			return fmt.Sprintf("daemon set %q successfully rolled out\n", name), true, nil
		}
		return "Waiting for daemon set spec update to be observed...\n", false, nil
	case *appsv1.StatefulSet:
		st, sp := o.GetStatus(), o.GetSpec()
		if t := sp.GetUpdateStrategy().GetType(); t != "" && t != "RollingUpdate" {
			return "", true, fmt.Errorf("rollout status is only available for RollingUpdate strategy type")
		}
		if st.GetObservedGeneration() == 0 || o.Metadata.Generation > st.GetObservedGeneration() {
			return "Waiting for statefulset spec update to be observed...\n", false, nil
		}
		if sp.Replicas != nil && st.GetReadyReplicas() < sp.GetReplicas() {
			return fmt.Sprintf("Waiting for %d pods to be ready...\n", sp.GetReplicas()-st.GetReadyReplicas()), false, nil
		}
		if p := sp.GetUpdateStrategy().GetRollingUpdate().GetPartition(); p > 0 && sp.Replicas != nil {
			if st.GetUpdatedReplicas() < sp.GetReplicas()-p {
				return fmt.Sprintf("Waiting for partitioned roll out to finish: %d out of %d new pods have been updated...\n", st.GetUpdatedReplicas(), sp.GetReplicas()-p), false, nil
			}
			return fmt.Sprintf("partitioned roll out complete: %d new pods have been updated...\n", st.GetUpdatedReplicas()), true, nil
		}
		if st.GetUpdateRevision() != st.GetCurrentRevision() {
			return fmt.Sprintf("waiting for statefulset rolling update to complete %d pods at revision %s...\n", st.GetUpdatedReplicas(), st.GetUpdateRevision()), false, nil
		}
		return fmt.Sprintf("statefulset rolling update complete %d pods at revision %s...\n", st.GetCurrentReplicas(), st.GetCurrentRevision()), true, nil
	}
	return "", true, fmt.Errorf("no status viewer has been implemented for %T", obj)
}

// revisionPatch turns a ControllerRevision's data (upstream's strategic
// patch {"spec":{"template":{..., "$patch":"replace"}}}) into a merge patch
// that replaces the template.
func revisionPatch(raw []byte) []byte {
	var doc map[string]any
	if json.Unmarshal(raw, &doc) != nil {
		return nil
	}
	var strip func(v any)
	strip = func(v any) {
		if m, ok := v.(map[string]any); ok {
			delete(m, "$patch")
			for _, x := range m {
				strip(x)
			}
		}
	}
	strip(doc)
	spec, _ := doc["spec"].(map[string]any)
	if spec == nil || spec["template"] == nil {
		return nil
	}
	b, _ := json.Marshal(map[string]any{"spec": map[string]any{"template": spec["template"]}})
	return b
}
