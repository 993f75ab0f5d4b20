package cmd

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"skiff.dev/client"
	"skiff.dev/ctl/internal/printers"
	"skiff.dev/proto/apierrors"
	"skiff.dev/proto/scheme"
)

// The pause before watching again after the apiserver went away doubles
// from watchRetryMin to watchRetryMax while it stays away.
const (
	watchRetryMin = 100 * time.Millisecond
	watchRetryMax = 5 * time.Second
)

// getWatch is one get -w: what it watches, what it last saw and where its
// output goes.
type getWatch struct {
	o     *Options
	d     *client.Dynamic
	opts  client.ListOptions // the selection; ResourceVersion unset
	print func([]scheme.Object) error
	// rv is the revision the output is complete up to: the list's, then each
	// event's (bookmarks included), so a new watch starts exactly after it.
	rv string
	// known is each object's last state, as a reflector's store holds it, so
	// a relist prints only what changed while the watch was gone.
	known map[string]scheme.Object
}

// printFailed is an error writing the output, which no retry mends.
type printFailed struct{ err error }

func (e printFailed) Error() string { return e.err.Error() }

// watch prints the objects, then one line (or document) per change until the
// user interrupts, as kubectl get -w does. The watch starts at the list's own
// resourceVersion, so no write between the list and the watch goes unseen.
// Unlike kubectl it outlives the apiserver going away: it resumes after the
// last revision it saw, and relists when that revision has expired.
func (o *Options) watch(ctx context.Context, g *getOptions, d *client.Dynamic, t target) error {
	w := &getWatch{o: o, d: d, opts: client.ListOptions{LabelSelector: g.selector, FieldSelector: g.fieldSelector},
		print: o.watchPrinter(g, t.kind), known: map[string]scheme.Object{}}
	if len(t.names) == 1 {
		// A list of the one object has a list resourceVersion to watch from.
		w.opts.FieldSelector = joinSelectors(w.opts.FieldSelector, "metadata.name="+t.names[0])
	}
	l, err := d.List(ctx, w.opts)
	if err != nil {
		return o.printError(err)
	}
	if len(t.names) == 1 && len(l.Items) == 0 && !g.watchOnly {
		return o.printError(apierrors.NewNotFound(t.kind.GroupResource(), t.names[0]))
	}
	for _, obj := range l.Items {
		w.known[objectKey(obj)] = obj
	}
	if !g.watchOnly && len(l.Items) > 0 {
		if err := w.print(l.Items); err != nil {
			return err
		}
	}
	w.rv = l.ResourceVersion
	delay, relist := watchRetryMin, false
	for {
		var err error
		if relist {
			if err = w.relist(ctx); err == nil {
				relist = false
				continue
			}
		} else {
			var progressed bool
			progressed, err = w.once(ctx)
			if progressed {
				delay = watchRetryMin
			}
		}
		if ctx.Err() != nil {
			return nil
		}
		var pf printFailed
		switch {
		case errors.As(err, &pf):
			return pf.err
		case apierrors.IsExpired(err):
			// The revision is gone from etcd's history: only a new list
			// tells what happened meanwhile.
			relist = true
		case !resumable(err):
			return o.printError(err)
		}
		if o.Verbosity >= 6 {
			next := "watching again from resourceVersion " + w.rv
			if relist {
				next = "listing again"
			}
			fmt.Fprintf(o.streams.Err, "I%s watch of %s ended with: %v; %s in %s\n",
				time.Now().Format("0102 15:04:05.000000"), d.Kind().GroupResource(), err, next, delay)
		}
		// gRPC's own reconnect backoff grows to two minutes; ours decides.
		if r, ok := o.conn.(interface{ ResetConnectBackoff() }); ok {
			r.ResetConnectBackoff()
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(delay):
		}
		delay = min(2*delay, watchRetryMax)
	}
}

// once watches from w.rv until the stream ends, printing each change; it
// reports whether any event (a bookmark counts) came.
func (w *getWatch) once(ctx context.Context) (progressed bool, err error) {
	opts := w.opts
	opts.ResourceVersion, opts.AllowBookmarks = w.rv, true
	wt, err := w.d.Watch(ctx, opts)
	if err != nil {
		return false, err
	}
	defer wt.Stop()
	for ev := range wt.Events() {
		progressed = true
		if rv := scheme.Meta(ev.Object).GetResourceVersion(); rv != "" {
			w.rv = rv
		}
		switch ev.Type {
		case client.Bookmark:
			continue
		case client.Deleted:
			delete(w.known, objectKey(ev.Object))
		default:
			w.known[objectKey(ev.Object)] = ev.Object
		}
		if err := w.print([]scheme.Object{ev.Object}); err != nil {
			return progressed, printFailed{err}
		}
	}
	return progressed, wt.Err()
}

// relist replaces what the watch knew with a fresh list and prints what
// differs, as a reflector's Replace does: objects new or changed since last
// seen, and the last state of those that are gone.
func (w *getWatch) relist(ctx context.Context) error {
	l, err := w.d.List(ctx, w.opts)
	if err != nil {
		return err
	}
	var changed []scheme.Object
	now := make(map[string]scheme.Object, len(l.Items))
	for _, obj := range l.Items {
		k := objectKey(obj)
		now[k] = obj
		if old, ok := w.known[k]; !ok || old.GetMetadata().GetResourceVersion() != obj.GetMetadata().GetResourceVersion() {
			changed = append(changed, obj)
		}
	}
	for k, obj := range w.known {
		if _, ok := now[k]; !ok {
			changed = append(changed, obj)
		}
	}
	w.known, w.rv = now, l.ResourceVersion
	if len(changed) == 0 {
		return nil
	}
	if err := w.print(changed); err != nil {
		return printFailed{err}
	}
	return nil
}

// resumable tells the watch ended because the apiserver went away or asked
// the client to come back, not because the request is wrong.
func resumable(err error) bool {
	if err == nil {
		// The server ended the stream without an error.
		return true
	}
	if status.Code(err) == codes.Unavailable {
		return true
	}
	// A freshly restarted apiserver's cache may not have reached the
	// revision yet ("Too large resource version").
	return apierrors.ReasonOf(err) == apierrors.ReasonTimeout
}

func objectKey(obj scheme.Object) string {
	m := obj.GetMetadata()
	return m.GetNamespace() + "/" + m.GetName()
}

func joinSelectors(a, b string) string {
	if a == "" {
		return b
	}
	return a + "," + b
}

// watchPrinter prints objects as get -w does: a table whose header comes
// once, or each object as its own document.
func (o *Options) watchPrinter(g *getOptions, k *scheme.Kind) func([]scheme.Object) error {
	opts := o.tableOptions(g)
	header := !g.noHeaders
	return func(objs []scheme.Object) error {
		switch {
		case g.output == "json":
			for _, obj := range objs {
				if err := printers.JSON(o.streams.Out, []scheme.Object{obj}, true); err != nil {
					return err
				}
			}
			return nil
		case g.output == "yaml":
			for _, obj := range objs {
				fmt.Fprintln(o.streams.Out, "---")
				if err := printers.YAML(o.streams.Out, []scheme.Object{obj}, true); err != nil {
					return err
				}
			}
			return nil
		case g.output == "name":
			return printers.Name(o.streams.Out, objs)
		case strings.HasPrefix(g.output, "jsonpath="):
			for _, obj := range objs {
				if err := printers.JSONPath(o.streams.Out, strings.TrimPrefix(g.output, "jsonpath="), []scheme.Object{obj}, true); err != nil {
					return err
				}
			}
			return nil
		case strings.HasPrefix(g.output, "custom-columns="):
			noHeaders := !header
			header = false
			return printers.CustomColumns(o.streams.Out, strings.TrimPrefix(g.output, "custom-columns="), objs, noHeaders)
		}
		opts.NoHeaders = !header
		header = false
		opts.Now = time.Now()
		return printers.Table(o.streams.Out, k, objs, opts)
	}
}
