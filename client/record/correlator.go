package record

import (
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"
	"google.golang.org/protobuf/proto"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/utils/lru"

	corev1 "skiff.dev/proto/api/core/v1"
	metav1 "skiff.dev/proto/api/meta/v1"
)

// Upstream's EventCorrelator defaults (client-go tools/record/events_cache.go).
const (
	lruCacheEntries = 4096

	// Ten events that differ only in their message within ten minutes are
	// aggregated into one.
	aggregateMaxEvents = 10
	aggregateInterval  = 10 * time.Minute

	// A source may send 25 events about an object at once, then one every
	// five minutes: a crash-looping object stays visible without flooding.
	spamBurst  = 25
	spamRefill = 5 * time.Minute

	aggregateMessagePrefix = "(combined from similar events): "
)

// key joins fields with a byte no name or reason contains, so that two
// different tuples never share a key (upstream joins with "").
func key(fields ...string) string { return strings.Join(fields, "\x00") }

// eventKey identifies an event up to its timestamps and count: the same
// event again is counted, not written anew.
func eventKey(e *corev1.Event) string {
	o := e.GetInvolvedObject()
	return key(e.GetSource().GetComponent(), e.GetSource().GetHost(), o.GetKind(), o.GetNamespace(), o.GetName(),
		o.GetFieldPath(), o.GetUid(), o.GetApiVersion(), e.GetType(), e.GetReason(), e.GetMessage())
}

// spamKey is the source and object an event's rate limit is shared by.
func spamKey(e *corev1.Event) string {
	o := e.GetInvolvedObject()
	return key(e.GetSource().GetComponent(), e.GetSource().GetHost(), o.GetKind(), o.GetNamespace(), o.GetName(),
		o.GetUid(), o.GetApiVersion())
}

// aggregateKey groups events that differ only in their message; the message
// is the local key within the group (upstream's EventAggregatorByReasonFunc).
func aggregateKey(e *corev1.Event) (group, local string) {
	o := e.GetInvolvedObject()
	return key(e.GetSource().GetComponent(), e.GetSource().GetHost(), o.GetKind(), o.GetNamespace(), o.GetName(),
		o.GetUid(), o.GetApiVersion(), e.GetType(), e.GetReason(), e.GetReportingComponent(), e.GetReportingInstance()), e.GetMessage()
}

// correlator is upstream's EventCorrelator: it aggregates similar events,
// counts repeated ones and drops what exceeds an object's rate limit.
type correlator struct {
	now func() time.Time

	aggregates *lru.Cache // aggregateKey → *aggregateRecord
	logs       *lru.Cache // cache key → eventLog
	spam       *lru.Cache // spamKey → *rate.Limiter

	// mu makes each step's read-modify-write of a cache entry atomic.
	mu sync.Mutex
}

func newCorrelator(now func() time.Time) *correlator {
	return &correlator{now: now, aggregates: lru.New(lruCacheEntries), logs: lru.New(lruCacheEntries), spam: lru.New(lruCacheEntries)}
}

type aggregateRecord struct {
	messages sets.Set[string]
	last     time.Time
}

// eventLog is what the logger remembers of an event it has seen.
type eventLog struct {
	count           int32
	first           *metav1.Time
	name            string
	resourceVersion string
}

// correlation is what to write for an event.
type correlation struct {
	event *corev1.Event
	// patch, when set, is a merge patch of the existing Event event names.
	patch []byte
	// key is the logger's cache key, to record the server's answer under.
	key string
	// aggregated says the event was folded into an aggregate one.
	aggregated bool
	// skip says the spam filter dropped the event.
	skip bool
}

// correlate is upstream's EventCorrelate: aggregate, then observe (count),
// then filter. As upstream, a filtered event is still counted, so the next
// write carries the true number of occurrences.
func (c *correlator) correlate(ev *corev1.Event) correlation {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	ev, ckey, aggregated := c.aggregate(ev, now)
	ev, patch := c.observe(ev, ckey)
	if !c.allow(ev, now) {
		return correlation{skip: true, aggregated: aggregated}
	}
	return correlation{event: ev, patch: patch, key: ckey, aggregated: aggregated}
}

// aggregate returns ev and its full key while fewer than aggregateMaxEvents
// messages were seen for its group within aggregateInterval; from then on an
// aggregate event under the group's key, so that the logger counts the
// aggregate rather than writing each message.
func (c *correlator) aggregate(ev *corev1.Event, now time.Time) (*corev1.Event, string, bool) {
	group, local := aggregateKey(ev)
	var rec *aggregateRecord
	if v, ok := c.aggregates.Get(group); ok {
		rec = v.(*aggregateRecord)
	}
	if rec == nil || now.Sub(rec.last) > aggregateInterval {
		rec = &aggregateRecord{messages: sets.New[string]()}
		c.aggregates.Add(group, rec)
	}
	rec.messages.Insert(local)
	rec.last = now
	if rec.messages.Len() < aggregateMaxEvents {
		return ev, eventKey(ev), false
	}
	// Keep the set from growing past the threshold, as upstream.
	rec.messages.PopAny()

	t := metav1.NewTime(now)
	agg := &corev1.Event{
		Metadata: &metav1.ObjectMeta{
			Name:      fmt.Sprintf("%v.%x", ev.GetInvolvedObject().GetName(), now.UnixNano()),
			Namespace: ev.GetMetadata().GetNamespace(),
		},
		InvolvedObject: ev.GetInvolvedObject(),
		Reason:         ev.GetReason(),
		Message:        aggregateMessagePrefix + ev.GetMessage(),
		Type:           ev.GetType(),
		Source:         ev.GetSource(),
		Count:          1,
		FirstTimestamp: t,
		LastTimestamp:  proto.Clone(t).(*metav1.Time),
		// Upstream drops these on aggregate events; they are part of the
		// group's key, so keep them.
		ReportingComponent: ev.GetReportingComponent(),
		ReportingInstance:  ev.GetReportingInstance(),
	}
	return agg, group, true
}

// observe is upstream's eventLogger.eventObserve: an event seen before under
// key becomes the next occurrence of the Event already written, with a merge
// patch of its count, lastTimestamp and message.
func (c *correlator) observe(ev *corev1.Event, key string) (*corev1.Event, []byte) {
	ev = proto.Clone(ev).(*corev1.Event)
	var patch []byte
	if v, ok := c.logs.Get(key); ok {
		last := v.(eventLog)
		ev.Metadata.Name = last.name
		ev.Metadata.ResourceVersion = last.resourceVersion
		ev.FirstTimestamp = last.first
		ev.Count = last.count + 1
		patch = countPatch(ev)
	}
	c.logs.Add(key, eventLog{count: ev.Count, first: ev.FirstTimestamp, name: ev.Metadata.GetName(),
		resourceVersion: ev.Metadata.GetResourceVersion()})
	return ev, patch
}

// countPatch is the merge patch upstream's two-way diff amounts to: the
// fields that change when an event occurs again, and nothing else (our codec
// writes every required field, so it would clear the reporting ones).
func countPatch(ev *corev1.Event) []byte {
	p, _ := json.Marshal(struct {
		Count         int32  `json:"count"`
		LastTimestamp string `json:"lastTimestamp"`
		Message       string `json:"message"`
	}{ev.GetCount(), ev.GetLastTimestamp().AsTime().Format(time.RFC3339), ev.GetMessage()})
	return p
}

// updateState records the server's copy of an event written under key, so
// the next occurrence patches it with the right name and count.
func (c *correlator) updateState(key string, ev *corev1.Event) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.logs.Add(key, eventLog{count: ev.GetCount(), first: ev.GetFirstTimestamp(), name: ev.GetMetadata().GetName(),
		resourceVersion: ev.GetMetadata().GetResourceVersion()})
}

// allow is upstream's EventSourceObjectSpamFilter: a token bucket per source
// and object.
func (c *correlator) allow(ev *corev1.Event, now time.Time) bool {
	k := spamKey(ev)
	var l *rate.Limiter
	if v, ok := c.spam.Get(k); ok {
		l = v.(*rate.Limiter)
	} else {
		// A new bucket starts full; AllowN's explicit times keep it on
		// the injected clock.
		l = rate.NewLimiter(rate.Every(spamRefill), spamBurst)
		c.spam.Add(k, l)
	}
	return l.AllowN(now, 1)
}
