package registry

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/util/validation/field"

	"skiff.dev/apiserver/internal/storage"
	"skiff.dev/apiserver/internal/validation"
	"skiff.dev/apiserver/internal/watchcache"
	"skiff.dev/proto/apierrors"
	"skiff.dev/proto/scheme"
	"skiff.dev/proto/selection"
)

// Get reads one object. resourceVersion "" reads the latest from etcd; "0"
// accepts the cache's copy; a number reads the object as it was at that
// revision from etcd's history (Expired once compacted away).
func (r *Registry) Get(ctx context.Context, k *scheme.Kind, ns, name, resourceVersion string) (*watchcache.Object, error) {
	res := r.res(k)
	_, key, err := res.requestKey(ns, name)
	if err != nil {
		return nil, err
	}
	var rev int64
	switch resourceVersion {
	case "":
	case "0":
		if o, ok := res.cache.Get(key); ok {
			return o, nil
		}
		return nil, apierrors.NewNotFound(k.GroupResource(), name)
	default:
		v, err := parseRV(resourceVersion)
		if err != nil {
			return nil, err
		}
		rev = v
	}
	kv, err := r.cfg.Store.Get(ctx, res.prefix+key, rev)
	if err != nil {
		return nil, r.readError(ctx, res, err, rev, name)
	}
	o, err := res.decode(key, kv.Value, kv.Rev)
	if err != nil {
		return nil, apierrors.NewInternal(err)
	}
	return o, nil
}

// requestKey settles the namespace a request for one object gives, with
// upstream's defaults, checks it and the name, and returns both with the
// object's key.
func (res *resource) requestKey(ns, name string) (namespace, key string, err error) {
	if !res.kind.Namespaced {
		ns = ""
	} else if ns == "" {
		ns = "default"
	}
	if name == "" {
		return "", "", apierrors.NewBadRequest("resource name may not be empty")
	}
	for what, v := range map[string]string{"resource name": name, "namespace": ns} {
		if errs := validation.PathSegment(v); len(errs) > 0 {
			return "", "", apierrors.NewBadRequest(fmt.Sprintf("invalid %s %q: %s", what, v, strings.Join(errs, ", ")))
		}
	}
	return ns, res.key(ns, name), nil
}

func parseRV(s string) (int64, error) {
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil || v < 0 {
		return 0, apierrors.NewBadRequest(fmt.Sprintf("invalid resource version %q: must be a non-negative integer", s))
	}
	return v, nil
}

// ListOptions select and page a list.
type ListOptions struct {
	LabelSelector, FieldSelector string
	Limit                        int64
	Continue                     string
	ResourceVersion              string
	ResourceVersionMatch         string // "", NotOlderThan, Exact
}

// ListResult is one page.
type ListResult struct {
	Items     []*watchcache.Object
	Rev       int64
	Continue  string
	Remaining *int64
}

func (res *resource) filter(ns, labelSel, fieldSel string) (watchcache.Filter, error) {
	f := watchcache.Filter{}
	if res.kind.Namespaced {
		f.Namespace = ns
	}
	ls, err := selection.ParseLabels(labelSel)
	if err != nil {
		return f, apierrors.NewBadRequest(err.Error())
	}
	fs, err := selection.ParseFields(res.kind, fieldSel)
	if err != nil {
		return f, apierrors.NewBadRequest(err.Error())
	}
	if !fs.Empty() {
		// The index serves watches of one node's pods; the scheduler's
		// "spec.nodeName=" stays a plain field match.
		if v, ok := fs.RequiresExactMatch("spec.nodeName"); ok && v != "" && res.kind.Kind == "Pod" {
			f.NodeName = v
		}
		f.Field = fs
	}
	if !ls.Empty() {
		f.Label = ls
	}
	return f, nil
}

// List serves a list from the watch cache. resourceVersion "" is a consistent
// read (the cache first catches up with etcd's current revision), "0" is
// whatever the cache holds, a number is "at least this fresh" — or, with
// resourceVersionMatch=Exact, the state at exactly that revision read from
// etcd's history. With a limit, the first page comes from the cache and the
// continue token holds its revision and last key; later pages are read from
// etcd at that revision, so every page belongs to one snapshot.
func (r *Registry) List(ctx context.Context, k *scheme.Kind, ns string, o ListOptions) (*ListResult, error) {
	res := r.res(k)
	f, err := res.filter(ns, o.LabelSelector, o.FieldSelector)
	if err != nil {
		return nil, err
	}
	if o.Limit < 0 {
		return nil, apierrors.NewBadRequest("limit: Invalid value: must be a non-negative integer")
	}
	if errs := validateListOptions(o); len(errs) > 0 {
		return nil, apierrors.NewInvalid("ListOptions.meta.k8s.io", "", errs)
	}
	if o.Continue != "" {
		tok, err := decodeContinue(o.Continue)
		if err != nil {
			return nil, err
		}
		return r.listFromEtcd(ctx, res, f, tok.Rev, tok.Start, o.Limit)
	}
	lo := watchcache.ListOptions{Filter: f}
	switch {
	case o.ResourceVersion == "":
		rev, err := res.cache.WaitFresh(ctx)
		if err != nil {
			return nil, res.storageError(err, "")
		}
		lo.Rev = rev
	case o.ResourceVersion == "0":
	case o.ResourceVersionMatch == "Exact":
		rev, err := parseRV(o.ResourceVersion)
		if err != nil {
			return nil, err
		}
		return r.listFromEtcd(ctx, res, f, rev, "", o.Limit)
	default:
		rev, err := parseRV(o.ResourceVersion)
		if err != nil {
			return nil, err
		}
		if err := waitRev(ctx, res.cache, rev); err != nil {
			return nil, err
		}
	}
	lo.Limit = o.Limit
	out, err := res.cache.List(ctx, lo)
	if err != nil {
		return nil, res.storageError(err, "")
	}
	lr := &ListResult{Items: out.Items, Rev: out.Rev}
	if out.More {
		n := out.Remaining
		lr.Remaining = &n
		lr.Continue = encodeContinue(continueToken{Rev: out.Rev, Start: out.Items[len(out.Items)-1].Key + "\x00"})
	}
	return lr, nil
}

// readError is the API's error for a read at revision rev: a revision
// etcd has not reached yet is upstream's "Too large resource version",
// which clients retry, not an outage.
func (r *Registry) readError(ctx context.Context, res *resource, err error, rev int64, name string) error {
	if errors.Is(err, storage.ErrFutureRevision) {
		cur, cerr := r.cfg.Store.CurrentRevision(ctx)
		if cerr != nil {
			return res.storageError(cerr, name)
		}
		return apierrors.NewTooLargeResourceVersion(rev, cur)
	}
	return res.storageError(err, name)
}

// validateListOptions is upstream's ValidateListOptions.
func validateListOptions(o ListOptions) field.ErrorList {
	match := o.ResourceVersionMatch
	if match == "" {
		return nil
	}
	var errs field.ErrorList
	p := field.NewPath("resourceVersionMatch")
	if o.ResourceVersion == "" {
		errs = append(errs, field.Forbidden(p, "resourceVersionMatch is forbidden unless resourceVersion is provided"))
	}
	if o.Continue != "" {
		errs = append(errs, field.Forbidden(p, "resourceVersionMatch is forbidden when continue is provided"))
	}
	if match != "Exact" && match != "NotOlderThan" {
		errs = append(errs, field.NotSupported(p, match, []string{"Exact", "NotOlderThan", ""}))
	}
	if match == "Exact" && o.ResourceVersion == "0" {
		errs = append(errs, field.Forbidden(p, `resourceVersionMatch "exact" is forbidden for resourceVersion "0"`))
	}
	return errs
}

// continueToken is where the next page starts: upstream's token holds the
// same two things.
type continueToken struct {
	Rev   int64  `json:"rv"`
	Start string `json:"start"`
}

func encodeContinue(t continueToken) string {
	b, _ := json.Marshal(t)
	return base64.RawURLEncoding.EncodeToString(b)
}

func decodeContinue(s string) (continueToken, error) {
	var t continueToken
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err == nil {
		err = json.Unmarshal(b, &t)
	}
	if err != nil || t.Rev <= 0 {
		return t, apierrors.NewBadRequest("continue: Invalid value: the continue token is not valid")
	}
	return t, nil
}

// listFromEtcd reads the resource at one revision from etcd's history,
// starting at start (a key under the resource), up to limit matches.
func (r *Registry) listFromEtcd(ctx context.Context, res *resource, f watchcache.Filter, rev int64, start string, limit int64) (*ListResult, error) {
	prefix := res.prefix
	if f.Namespace != "" {
		prefix += f.Namespace + "/"
	}
	startKey := ""
	if start != "" {
		startKey = res.prefix + start
	}
	lr := &ListResult{Rev: rev}
	for {
		page := int64(0)
		if limit > 0 {
			page = limit - int64(len(lr.Items)) + 1
		}
		kvs, _, more, err := r.cfg.Store.List(ctx, prefix, startKey, page, rev)
		if err != nil {
			if errors.Is(err, storage.ErrCompacted) && start != "" {
				return nil, apierrors.NewExpired("The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.")
			}
			return nil, r.readError(ctx, res, err, rev, "")
		}
		for _, kv := range kvs {
			o, err := res.decode(kv.Key[len(res.prefix):], kv.Value, kv.Rev)
			if err != nil {
				return nil, apierrors.NewInternal(err)
			}
			if !f.Matches(o) {
				continue
			}
			if limit > 0 && int64(len(lr.Items)) == limit {
				lr.Continue = encodeContinue(continueToken{Rev: rev, Start: lr.Items[len(lr.Items)-1].Key + "\x00"})
				return lr, nil
			}
			lr.Items = append(lr.Items, o)
		}
		if !more || len(kvs) == 0 {
			return lr, nil
		}
		startKey = kvs[len(kvs)-1].Key + "\x00"
	}
}

// WatchOptions select a watch.
type WatchOptions struct {
	LabelSelector, FieldSelector string
	ResourceVersion              string
	AllowBookmarks               bool
}

// Watch streams changes from the cache. resourceVersion "" or "0" starts with
// a synthetic ADDED for every matching object, then changes; a number
// streams changes strictly after it (Expired once it left the cache's window).
func (r *Registry) Watch(ctx context.Context, k *scheme.Kind, ns string, o WatchOptions) (*watchcache.Watcher, error) {
	res := r.res(k)
	f, err := res.filter(ns, o.LabelSelector, o.FieldSelector)
	if err != nil {
		return nil, err
	}
	wo := watchcache.WatchOptions{Filter: f, Bookmarks: o.AllowBookmarks}
	switch o.ResourceVersion {
	case "":
		if _, err := res.cache.WaitFresh(ctx); err != nil {
			return nil, res.storageError(err, "")
		}
		wo.InitialState = true
	case "0":
		wo.InitialState = true
	default:
		rev, err := parseRV(o.ResourceVersion)
		if err != nil {
			return nil, err
		}
		if err := waitRev(ctx, res.cache, rev); err != nil {
			return nil, err
		}
		wo.FromRev = rev
	}
	w, err := res.cache.Watch(ctx, wo)
	if err != nil {
		if errors.Is(err, watchcache.ErrExpired) {
			return nil, apierrors.NewExpired(fmt.Sprintf("too old resource version: %s (%d)", o.ResourceVersion, res.cache.Rev()))
		}
		return nil, apierrors.NewInternal(err)
	}
	return w, nil
}

// waitRev gives the cache up to three seconds to reach a revision a client
// has seen elsewhere, as upstream's cacher does, then answers as upstream.
func waitRev(ctx context.Context, c *watchcache.Cache, rev int64) error {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	if err := c.WaitRev(ctx, rev); err != nil {
		return apierrors.NewTooLargeResourceVersion(rev, c.Rev())
	}
	return nil
}

// HistoryItem is one past write of an object.
type HistoryItem struct {
	Object  *watchcache.Object
	Deleted bool
}

// History lists the object's writes etcd still holds, newest first.
func (r *Registry) History(ctx context.Context, k *scheme.Kind, ns, name string, limit int64) ([]HistoryItem, int64, error) {
	res := r.res(k)
	_, key, err := res.requestKey(ns, name)
	if err != nil {
		return nil, 0, err
	}
	revs, compacted, err := r.cfg.Store.History(ctx, res.prefix+key)
	if err != nil {
		return nil, 0, res.storageError(err, name)
	}
	if len(revs) == 0 {
		return nil, compacted, apierrors.NewNotFound(k.GroupResource(), name)
	}
	out := make([]HistoryItem, 0, len(revs))
	for i := len(revs) - 1; i >= 0 && (limit <= 0 || int64(len(out)) < limit); i-- {
		o, err := res.decode(key, revs[i].Value, revs[i].Rev)
		if err != nil {
			return nil, 0, apierrors.NewInternal(err)
		}
		out = append(out, HistoryItem{Object: o, Deleted: revs[i].Delete})
	}
	return out, compacted, nil
}
