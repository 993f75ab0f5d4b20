package registry

import (
	"bytes"
	"sync"

	"skiff.dev/apiserver/internal/watchcache"
	corev1 "skiff.dev/proto/api/core/v1"
	"skiff.dev/proto/scheme"
	"skiff.dev/proto/selection"
)

// recentWrites hands objects this apiserver just wrote to its own watch
// cache, so the cache takes them as built instead of decoding the same bytes
// again.
//
// The write and its watch event race: the event may reach the cache before
// the writer offers the object. decoded, the newest revision the cache has
// decoded, settles the race under one lock: an offer at or below it comes
// too late and is dropped, so nothing is left behind that no event will
// collect. A full relist drops everything the list covers.
type recentWrites struct {
	mu      sync.Mutex
	objs    map[string]*watchcache.Object
	decoded int64
}

// maxRecent bounds the map while the cache's watch lags behind the writes.
const maxRecent = 4096

// offer keeps o for the cache unless the cache has already passed its revision.
func (r *recentWrites) offer(k *scheme.Kind, o *watchcache.Object) {
	obj := o.Msg.(scheme.Object)
	o.Labels = selection.Labels(obj)
	o.Fields = selection.Fields(k, obj)
	if p, ok := obj.(*corev1.Pod); ok {
		o.NodeName = p.GetSpec().GetNodeName()
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if o.Rev <= r.decoded || len(r.objs) >= maxRecent {
		return
	}
	if r.objs == nil {
		r.objs = map[string]*watchcache.Object{}
	}
	r.objs[o.Key] = o
}

// take returns the offered object for a stored value at rev, if it is that
// value, and forgets every offer for key at or below rev.
func (r *recentWrites) take(key string, value []byte, rev int64) *watchcache.Object {
	r.mu.Lock()
	r.decoded = max(r.decoded, rev)
	o, ok := r.objs[key]
	if ok && o.Rev <= rev {
		delete(r.objs, key)
	}
	r.mu.Unlock()
	if !ok || o.Rev != rev || len(o.Raw) < len(value) || !bytes.Equal(o.Raw[:len(value)], value) {
		return nil
	}
	return o
}

// reset forgets every offer a list at rev already holds.
func (r *recentWrites) reset(rev int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.decoded = max(r.decoded, rev)
	for k, o := range r.objs {
		if o.Rev <= rev {
			delete(r.objs, k)
		}
	}
}

// len is the number of offers waiting (tests).
func (r *recentWrites) len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.objs)
}

// decodeForCache is decode, skipped for objects this apiserver just wrote.
func (res *resource) decodeForCache(key string, value []byte, rev int64) (*watchcache.Object, error) {
	if len(value) > 0 {
		if o := res.recent.take(key, value, rev); o != nil {
			return o, nil
		}
	}
	return res.decode(key, value, rev)
}
