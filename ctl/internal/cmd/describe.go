package cmd

import (
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"
	"unicode"

	"github.com/spf13/cobra"

	"skiff.dev/client"
	"skiff.dev/ctl/internal/printers"
	corev1 "skiff.dev/proto/api/core/v1"
	"skiff.dev/proto/codec"
	"skiff.dev/proto/scheme"
)

// diagnosisAnnotation is where skiff-scheduler explains, per node, why a pod
// is pending.
const diagnosisAnnotation = "scheduler.skiff.dev/diagnosis"

func newDescribe(o *Options) *cobra.Command {
	var selector string
	c := &cobra.Command{
		Use:   "describe (TYPE [NAME | -l label] | TYPE/NAME)",
		Short: "Show details of a specific resource or group of resources",
		RunE: func(cmd *cobra.Command, args []string) error {
			ds, names, err := o.resolveTargets(cmd, args, selector, true)
			if err != nil {
				return err
			}
			first := true
			failed := false
			for i, d := range ds {
				for _, n := range names[i] {
					obj, err := d.Get(cmd.Context(), n)
					if err != nil {
						o.printError(err)
						failed = true
						continue
					}
					if !first {
						fmt.Fprintln(o.streams.Out)
					}
					first = false
					evs := o.eventsFor(cmd, obj)
					if err := describe(o.streams.Out, d.Kind(), obj, evs, time.Now()); err != nil {
						return err
					}
				}
			}
			if failed {
				return exitError{code: 1}
			}
			return nil
		},
	}
	c.Flags().StringVarP(&selector, "selector", "l", "", "Selector (label query) to filter on.")
	return c
}

func (o *Options) eventsFor(cmd *cobra.Command, obj scheme.Object) []*corev1.Event {
	cl, err := o.client(cmd.Context())
	if err != nil {
		return nil
	}
	m := obj.GetMetadata()
	ns := m.GetNamespace()
	if ns == "" {
		ns = "default"
	}
	l, err := client.For[*corev1.Event](cl, ns).List(cmd.Context(), client.ListOptions{FieldSelector: "involvedObject.name=" + m.GetName()})
	if err != nil {
		return nil
	}
	var out []*corev1.Event
	for _, e := range l.Items {
		if e.GetInvolvedObject().GetUid() == "" || e.GetInvolvedObject().GetUid() == m.GetUid() {
			out = append(out, e)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		return out[i].GetLastTimestamp().AsTime().Before(out[j].GetLastTimestamp().AsTime())
	})
	return out
}

// describe prints kubectl's describe layout: identity first, then the
// object's fields as an indented outline, then its Events.
func describe(w io.Writer, k *scheme.Kind, obj scheme.Object, events []*corev1.Event, now time.Time) error {
	if d, ok := describers[k.Kind]; ok {
		tw := printers.NewTabWriter(w)
		d(tw, obj, now)
		if err := tw.Flush(); err != nil {
			return err
		}
		if p, ok := obj.(*corev1.Pod); ok {
			schedulingDiagnosis(w, p)
		}
		return describeEvents(w, events, now)
	}
	m := obj.GetMetadata()
	tw := printers.NewTabWriter(w)
	fmt.Fprintf(tw, "Name:\t%s\n", m.GetName())
	if k.Namespaced {
		fmt.Fprintf(tw, "Namespace:\t%s\n", m.GetNamespace())
	}
	writeMap(tw, "Labels", m.GetLabels())
	ann := map[string]string{}
	for key, v := range m.GetAnnotations() {
		if key != LastApplied && key != diagnosisAnnotation {
			ann[key] = v
		}
	}
	writeMap(tw, "Annotations", ann)
	if t := m.GetCreationTimestamp(); !t.IsZero() {
		fmt.Fprintf(tw, "CreationTimestamp:\t%s\n", t.AsTime().Format(time.RFC1123Z))
	}
	if p, ok := obj.(*corev1.Pod); ok {
		node := p.GetSpec().GetNodeName()
		if node == "" {
			node = "<none>"
		}
		fmt.Fprintf(tw, "Node:\t%s\n", node)
		fmt.Fprintf(tw, "Status:\t%s\n", printers.PodStatus(p))
		if ip := p.GetStatus().GetPodIP(); ip != "" {
			fmt.Fprintf(tw, "IP:\t%s\n", ip)
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	js, err := codec.MarshalJSON(obj)
	if err != nil {
		return err
	}
	var doc map[string]any
	if err := json.Unmarshal(js, &doc); err != nil {
		return err
	}
	for _, key := range []string{"apiVersion", "kind", "metadata"} {
		delete(doc, key)
	}
	outline(w, doc, 0)
	if p, ok := obj.(*corev1.Pod); ok {
		schedulingDiagnosis(w, p)
	}
	return describeEvents(w, events, now)
}

func writeMap(tw io.Writer, title string, m map[string]string) {
	if len(m) == 0 {
		fmt.Fprintf(tw, "%s:\t<none>\n", title)
		return
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for i, k := range keys {
		head := title + ":"
		if i > 0 {
			head = ""
		}
		fmt.Fprintf(tw, "%s\t%s=%s\n", head, k, m[k])
	}
}

// title turns a JSON field name into describe's heading: "nodeName" → "Node Name".
func title(s string) string {
	var b strings.Builder
	for i, r := range s {
		if i == 0 {
			b.WriteRune(unicode.ToUpper(r))
			continue
		}
		if unicode.IsUpper(r) && !unicode.IsUpper(rune(s[i-1])) {
			b.WriteByte(' ')
		}
		b.WriteRune(r)
	}
	return b.String()
}

func outline(w io.Writer, v any, depth int) {
	pad := strings.Repeat("  ", depth)
	switch x := v.(type) {
	case map[string]any:
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			switch val := x[k].(type) {
			case map[string]any, []any:
				if isEmpty(val) {
					fmt.Fprintf(w, "%s%s:  <none>\n", pad, title(k))
					continue
				}
				fmt.Fprintf(w, "%s%s:\n", pad, title(k))
				outline(w, val, depth+1)
			default:
				fmt.Fprintf(w, "%s%s:  %v\n", pad, title(k), scalar(val))
			}
		}
	case []any:
		for i, it := range x {
			switch it.(type) {
			case map[string]any, []any:
				if i > 0 {
					fmt.Fprintln(w, pad+"---")
				}
				outline(w, it, depth)
			default:
				fmt.Fprintf(w, "%s%v\n", pad, scalar(it))
			}
		}
	}
}

func isEmpty(v any) bool {
	switch x := v.(type) {
	case map[string]any:
		return len(x) == 0
	case []any:
		return len(x) == 0
	}
	return false
}

func scalar(v any) string {
	switch x := v.(type) {
	case float64:
		if x == float64(int64(x)) {
			return fmt.Sprint(int64(x))
		}
		return fmt.Sprint(x)
	case nil:
		return "<none>"
	}
	return fmt.Sprint(v)
}

// schedulingDiagnosis shows, for a pending pod, which plugin rejected each
// node (written by skiff-scheduler): beyond kubectl.
func schedulingDiagnosis(w io.Writer, p *corev1.Pod) {
	raw := p.GetMetadata().GetAnnotations()[diagnosisAnnotation]
	if raw == "" || p.GetSpec().GetNodeName() != "" {
		return
	}
	var d map[string]string
	if json.Unmarshal([]byte(raw), &d) != nil {
		return
	}
	nodes := make([]string, 0, len(d))
	for n := range d {
		nodes = append(nodes, n)
	}
	sort.Strings(nodes)
	fmt.Fprintln(w, "Scheduling:")
	tw := printers.NewTabWriter(w)
	fmt.Fprintln(tw, "  Node\tRejected by")
	fmt.Fprintln(tw, "  ----\t-----------")
	for _, n := range nodes {
		fmt.Fprintf(tw, "  %s\t%s\n", n, d[n])
	}
	tw.Flush()
}

func describeEvents(w io.Writer, events []*corev1.Event, now time.Time) error {
	if len(events) == 0 {
		_, err := fmt.Fprintln(w, "Events:  <none>")
		return err
	}
	fmt.Fprintln(w, "Events:")
	tw := printers.NewTabWriter(w)
	fmt.Fprintln(tw, "  Type\tReason\tAge\tFrom\tMessage")
	fmt.Fprintln(tw, "  ----\t------\t----\t----\t-------")
	for _, e := range events {
		from := e.GetSource().GetComponent()
		if from == "" {
			from = e.GetReportingComponent()
		}
		age := printers.Age(e.GetLastTimestamp(), now)
		if e.Count > 1 {
			age = fmt.Sprintf("%s (x%d over %s)", age, e.Count, printers.Age(e.GetFirstTimestamp(), now))
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\n", e.Type, e.Reason, age, from, strings.TrimSpace(e.Message))
	}
	return tw.Flush()
}
