// Package record is client-go's tools/record for Skiff: controllers report
// what they did as core/v1 Events, aggregated and rate-limited as upstream's
// EventCorrelator does, so a crash-looping object cannot flood etcd.
//
// Recording never blocks: recorders put events on a bounded queue, and the
// Broadcaster's Run correlates and writes them. What does not fit, what the
// spam filter refuses and what cannot be written is dropped and counted.
package record

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"skiff.dev/client"
	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
	"skiff.dev/proto/apierrors"
	"skiff.dev/proto/scheme"
)

// Event types, as upstream's v1.EventTypeNormal and v1.EventTypeWarning.
const (
	Normal  = "Normal"
	Warning = "Warning"
)

const (
	defaultQueueSize = 1000 // upstream's maxQueuedEvents
	// Upstream tries 12 times 10 s apart, holding every other event for two
	// minutes; we give up sooner: about 15 s with the default delay.
	maxTries          = 6
	defaultRetryDelay = 500 * time.Millisecond
	maxRetryDelay     = 8 * time.Second
	// writeTimeout bounds one request, so a hung apiserver cannot hold the
	// queue forever.
	writeTimeout = 15 * time.Second
)

// Recorder records events about objects. It never blocks: an event that
// cannot be queued is dropped and counted.
type Recorder interface {
	// Event records an event of eventtype (Normal or Warning) about obj.
	// reason is a short UpperCamelCase machine-readable word ("Scheduled").
	Event(obj scheme.Object, eventtype, reason, message string)
	// Eventf is Event with fmt.Sprintf's formatting.
	Eventf(obj scheme.Object, eventtype, reason, messageFmt string, args ...any)
}

// Options configure a Broadcaster. The zero value is upstream's defaults.
type Options struct {
	Logger *slog.Logger
	// Registerer receives the skiff_events_* metrics; nil registers none.
	Registerer prometheus.Registerer
	// Now is the clock of timestamps, aggregation and the spam filter
	// (time.Now if nil); tests inject their own.
	Now func() time.Time
	// Host is the events' source.host and reportingInstance, as upstream's
	// EventSource.Host (usually the node or pod name); may be empty.
	Host string
	// QueueSize bounds the events waiting to be written (1000 if 0).
	QueueSize int
	// RetryDelay is the wait before the first retry of a failed write,
	// doubled for each further one up to 8 s (500 ms if 0). As upstream,
	// the first wait is randomised so clients do not retry in step.
	RetryDelay time.Duration
}

// Broadcaster queues events from its recorders and, in Run, correlates and
// writes them.
type Broadcaster struct {
	c          *client.Client
	log        *slog.Logger
	now        func() time.Time
	host       string
	retryDelay time.Duration
	queue      chan *corev1.Event
	corr       *correlator
	m          *metrics
}

// NewBroadcaster returns a broadcaster writing through c. Events are only
// written while Run runs; until then they wait in the queue.
func NewBroadcaster(c *client.Client, o Options) *Broadcaster {
	b := &Broadcaster{c: c, log: o.Logger, now: o.Now, host: o.Host, retryDelay: o.RetryDelay}
	if b.log == nil {
		b.log = slog.New(slog.DiscardHandler)
	}
	if b.now == nil {
		b.now = time.Now
	}
	if b.retryDelay <= 0 {
		b.retryDelay = defaultRetryDelay
	}
	size := o.QueueSize
	if size <= 0 {
		size = defaultQueueSize
	}
	b.queue = make(chan *corev1.Event, size)
	b.corr = newCorrelator(b.now)
	b.m = newMetrics(o.Registerer)
	return b
}

// Run writes queued events until ctx ends, then returns nil; events still
// queued are dropped. Call it once per Broadcaster.
func (b *Broadcaster) Run(ctx context.Context) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev := <-b.queue:
			b.recordToSink(ctx, ev)
		}
	}
}

// NewRecorder returns a recorder whose events name component as their
// source (upstream's EventSource.Component and reportingController).
func (b *Broadcaster) NewRecorder(component string) Recorder {
	return &recorder{b: b, component: component}
}

type recorder struct {
	b         *Broadcaster
	component string
}

func (r *recorder) Event(obj scheme.Object, eventtype, reason, message string) {
	b := r.b
	ev, err := r.makeEvent(obj, eventtype, reason, message)
	if err != nil {
		b.m.dropped.WithLabelValues(dropInvalid).Inc()
		b.log.Error("Could not construct event, will not report it", "err", err, "eventType", eventtype, "reason", reason, "message", message)
		return
	}
	select {
	case b.queue <- ev:
		b.m.recorded.WithLabelValues(eventtype).Inc()
	default:
		b.m.dropped.WithLabelValues(dropQueueFull).Inc()
		b.log.Debug("Unable to record event: too many queued events, dropped event", "object", objectRef(ev), "reason", reason)
	}
}

func (r *recorder) Eventf(obj scheme.Object, eventtype, reason, messageFmt string, args ...any) {
	r.Event(obj, eventtype, reason, fmt.Sprintf(messageFmt, args...))
}

// makeEvent is upstream's makeEvent with ref.GetReference: the Event lives
// in the object's namespace, "default" for cluster-scoped objects.
func (r *recorder) makeEvent(obj scheme.Object, eventtype, reason, message string) (*corev1.Event, error) {
	if eventtype != Normal && eventtype != Warning {
		return nil, fmt.Errorf("unsupported event type %q", eventtype)
	}
	if obj == nil || obj.GetMetadata() == nil {
		return nil, fmt.Errorf("no object to refer to")
	}
	k, ok := scheme.ForMessage(obj)
	if !ok {
		return nil, fmt.Errorf("%T is not a kind of skiff.dev/proto/scheme", obj)
	}
	m := obj.GetMetadata()
	ns := m.GetNamespace()
	if ns == "" {
		ns = "default"
	}
	t := r.b.now()
	ts := metav1.NewTime(t)
	return &corev1.Event{
		Metadata: &metav1.ObjectMeta{Name: fmt.Sprintf("%v.%x", m.GetName(), t.UnixNano()), Namespace: ns},
		InvolvedObject: &corev1.ObjectReference{Kind: k.Kind, Namespace: m.GetNamespace(), Name: m.GetName(), Uid: m.GetUid(),
			ApiVersion: k.APIVersion(), ResourceVersion: m.GetResourceVersion()},
		Reason:             reason,
		Message:            message,
		Type:               eventtype,
		Source:             &corev1.EventSource{Component: r.component, Host: r.b.host},
		ReportingComponent: r.component,
		ReportingInstance:  r.b.host,
		FirstTimestamp:     ts,
		LastTimestamp:      &metav1.Time{Seconds: ts.Seconds, Nanos: ts.Nanos},
		Count:              1,
	}, nil
}

func objectRef(ev *corev1.Event) string {
	o := ev.GetInvolvedObject()
	if o.GetNamespace() == "" {
		return o.GetKind() + "/" + o.GetName()
	}
	return o.GetKind() + "/" + o.GetNamespace() + "/" + o.GetName()
}

// recordToSink correlates ev and writes the result, retrying what the
// apiserver may accept later.
func (b *Broadcaster) recordToSink(ctx context.Context, ev *corev1.Event) {
	c := b.corr.correlate(ev)
	if c.aggregated {
		b.m.aggregated.Inc()
	}
	if c.skip {
		b.m.dropped.WithLabelValues(dropSpam).Inc()
		return
	}
	delay := b.retryDelay
	for try := 1; ; try++ {
		err := b.write(ctx, c)
		if err == nil {
			return
		}
		if ctx.Err() != nil {
			b.m.dropped.WithLabelValues(dropWriteFailed).Inc()
			b.log.Debug("Unable to write event (broadcaster is shut down)", "object", objectRef(c.event), "reason", c.event.GetReason())
			return
		}
		if !retryable(err) {
			b.m.dropped.WithLabelValues(dropWriteFailed).Inc()
			if apierrors.IsAlreadyExists(err) {
				b.log.Debug("Server rejected event (will not retry!)", "object", objectRef(c.event), "reason", c.event.GetReason(), "err", err)
			} else {
				b.log.Error("Server rejected event (will not retry!)", "object", objectRef(c.event), "reason", c.event.GetReason(), "err", err)
			}
			return
		}
		if try >= maxTries {
			b.m.dropped.WithLabelValues(dropWriteFailed).Inc()
			b.log.Error("Unable to write event (retry limit exceeded!)", "object", objectRef(c.event), "reason", c.event.GetReason(), "err", err)
			return
		}
		b.log.Debug("Unable to write event (may retry after sleeping)", "object", objectRef(c.event), "reason", c.event.GetReason(), "err", err)
		wait := delay
		if try == 1 {
			wait = time.Duration(rand.Float64() * float64(delay))
		}
		delay = min(2*delay, maxRetryDelay)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
		case <-t.C:
		}
	}
}

// write patches the Event an earlier occurrence created, or creates one when
// there is none (or it was deleted since: Events expire after an hour).
func (b *Broadcaster) write(ctx context.Context, c correlation) error {
	ctx, cancel := context.WithTimeout(ctx, writeTimeout)
	defer cancel()
	ev := c.event
	events := client.For[*corev1.Event](b.c, ev.GetMetadata().GetNamespace())
	var (
		got *corev1.Event
		err error
	)
	if c.patch != nil {
		got, err = events.Patch(ctx, ev.GetMetadata().GetName(), "merge", c.patch, "")
		if err == nil {
			b.m.written.WithLabelValues("patch").Inc()
		}
	}
	if c.patch == nil || apierrors.IsNotFound(err) {
		ev.Metadata.ResourceVersion = ""
		got, err = events.Create(ctx, ev)
		if err == nil {
			b.m.written.WithLabelValues("create").Inc()
		}
	}
	if err != nil {
		return err
	}
	b.corr.updateState(c.key, got)
	return nil
}

// retryable says whether the apiserver may accept the write later: it was
// unreachable, overloaded or too slow. Anything else it said about the event
// it will say again, so upstream gives up at once.
func retryable(err error) bool {
	st, ok := status.FromError(err)
	if !ok {
		return true
	}
	switch st.Code() {
	case codes.Unavailable, codes.DeadlineExceeded, codes.Unknown, codes.Canceled:
		return true
	case codes.ResourceExhausted:
		return apierrors.IsTooManyRequests(err)
	}
	return false
}

// Reasons of skiff_events_dropped_total.
const (
	dropQueueFull   = "queue_full"
	dropSpam        = "spam"
	dropWriteFailed = "write_failed"
	dropInvalid     = "invalid"
)

// metrics are ours: upstream's recorder exports none, so a dropped event
// shows only as a log line there.
type metrics struct {
	recorded   *prometheus.CounterVec
	written    *prometheus.CounterVec
	dropped    *prometheus.CounterVec
	aggregated prometheus.Counter
}

// newMetrics shares one collector per name among the broadcasters of a
// registry; without one the counters count unexported.
func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		recorded: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "skiff_events_recorded_total",
			Help: "Events recorders queued for writing, by type."}, []string{"type"}),
		written: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "skiff_events_written_total",
			Help: "Event writes the apiserver accepted: create for a new Event, patch for another occurrence of one."}, []string{"operation"}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "skiff_events_dropped_total",
			Help: "Events not written, by reason: queue_full, spam (the per-object rate limit), write_failed, invalid."}, []string{"reason"}),
		aggregated: prometheus.NewCounter(prometheus.CounterOpts{Name: "skiff_events_aggregated_total",
			Help: "Events folded into a \"(combined from similar events)\" Event."}),
	}
	for _, r := range []string{dropQueueFull, dropSpam, dropWriteFailed, dropInvalid} {
		m.dropped.WithLabelValues(r) // export the zeros, so a rate of drops can be graphed from the start
	}
	if reg != nil {
		m.recorded = register(reg, m.recorded)
		m.written = register(reg, m.written)
		m.dropped = register(reg, m.dropped)
		m.aggregated = register(reg, m.aggregated)
	}
	return m
}

// register returns the collector already registered under c's name, if
// any; another registration error leaves c counting, unexported.
func register[T prometheus.Collector](reg prometheus.Registerer, c T) T {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(T); ok {
				return existing
			}
		}
	}
	return c
}
