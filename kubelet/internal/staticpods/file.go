package staticpods

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/fsnotify/fsnotify"
	"google.golang.org/protobuf/proto"

	corev1 "skiff.dev/proto/api/core/v1"
	"skiff.dev/proto/codec"
	"skiff.dev/proto/defaults"
)

// DefaultPeriod is upstream's fileCheckFrequency: the manifests are
// re-read this often, whatever inotify says.
const DefaultPeriod = 20 * time.Second

// settleDelay is how long a burst of inotify events (an editor's write,
// rename and chmod) is left to settle before the manifests are read, so
// that a file caught half-written does not stop its pod.
const settleDelay = 100 * time.Millisecond

// Source reads the static pods of --pod-manifest-path, a directory of
// manifests or a single one, at start and every Period, and sends the whole
// set on Updates whenever it changed (upstream's file source with its SET
// updates).
type Source struct {
	path, nodeName string
	period         time.Duration
	log            *slog.Logger
	now            func() time.Time

	updates chan []*corev1.Pod
	// seen keeps each UID's first-seen time across reads, so an unchanged
	// manifest yields the same pod object every time.
	seen map[string]string
	last []string // UIDs of the last set sent, sorted; nil before the first
}

// Options tune a Source; zero values are upstream's.
type Options struct {
	Period time.Duration
	Logger *slog.Logger
	Now    func() time.Time
}

// NewSource reads path's manifests for node nodeName.
func NewSource(path, nodeName string, o Options) *Source {
	s := &Source{path: path, nodeName: nodeName, period: o.Period, log: o.Logger, now: o.Now,
		updates: make(chan []*corev1.Pod, 1), seen: map[string]string{}}
	if s.period <= 0 {
		s.period = DefaultPeriod
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.now == nil {
		s.now = time.Now
	}
	return s
}

// Updates carries the full set of static pods each time it changes, the
// first right after Run starts. Only the newest set waits in it: a slow
// reader skips sets that were already replaced.
func (s *Source) Updates() <-chan []*corev1.Pod { return s.updates }

// Run reads the manifests now, on every inotify event under the path
// (upstream's file_linux.go: a new manifest starts its pod at once), and
// every period until ctx ends.
func (s *Source) Run(ctx context.Context) error {
	w := s.newWatch()
	defer w.close()
	s.poll()
	t := time.NewTicker(s.period)
	defer t.Stop()
	var settle <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-w.changed:
			if settle == nil {
				settle = time.After(settleDelay)
			}
		case <-settle:
			settle = nil
			w.add(s.path)
			s.poll()
		case <-t.C:
			w.add(s.path)
			s.poll()
		}
	}
}

// watch is the inotify side of a Source; without inotify (or before the
// path exists) changed never fires and the period alone applies.
type watch struct {
	w       *fsnotify.Watcher
	log     *slog.Logger
	watched string
	changed chan struct{}
}

func (s *Source) newWatch() *watch {
	w := &watch{log: s.log, changed: make(chan struct{}, 1)}
	fw, err := fsnotify.NewWatcher()
	if err != nil {
		s.log.Info("No inotify for the static pod path; reading it every period", "period", s.period, "err", err)
		return w
	}
	w.w = fw
	go func() {
		for {
			select {
			case _, ok := <-fw.Events:
				if !ok {
					return
				}
				select {
				case w.changed <- struct{}{}:
				default:
				}
			case err, ok := <-fw.Errors:
				if !ok {
					return
				}
				s.log.Info("inotify on the static pod path", "err", err)
			}
		}
	}()
	w.add(s.path)
	return w
}

// add watches path's directory, or the directory holding path when it is
// one file (an editor replaces a file by renaming over it, which a watch
// on the file itself would not survive). Events of other files there are
// harmless: a read that finds no change sends nothing.
func (w *watch) add(path string) {
	if w.w == nil {
		return
	}
	dir := path
	if fi, err := os.Stat(path); err != nil || !fi.IsDir() {
		dir = filepath.Dir(path)
	}
	if dir == w.watched {
		return
	}
	if err := w.w.Add(dir); err != nil {
		w.log.Debug("inotify on the static pod path", "dir", dir, "err", err)
		return
	}
	if w.watched != "" {
		_ = w.w.Remove(w.watched)
	}
	w.watched = dir
}

func (w *watch) close() {
	if w.w != nil {
		_ = w.w.Close()
	}
}

func (s *Source) poll() {
	pods, err := s.read()
	if err != nil {
		// The path exists but cannot be read: keep the pods as they are
		// rather than stop them all over a transient error.
		s.log.Error("Unable to read config path", "path", s.path, "err", err)
		return
	}
	uids := make([]string, len(pods))
	for i, p := range pods {
		uids[i] = p.GetMetadata().GetUid()
	}
	slices.Sort(uids)
	if s.last != nil && slices.Equal(uids, s.last) {
		return
	}
	s.last = uids
	// Forget the first-seen times of pods that are gone.
	for uid := range s.seen {
		if _, ok := slices.BinarySearch(uids, uid); !ok {
			delete(s.seen, uid)
		}
	}
	select {
	case <-s.updates:
	default:
	}
	s.updates <- pods
}

// read returns the static pods path holds now. A manifest that cannot be
// read or decoded is logged and left out, as upstream: its pod stops until
// the file is fixed. A path that does not exist holds no pods.
func (s *Source) read() ([]*corev1.Pod, error) {
	fi, err := os.Stat(s.path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		s.log.Debug("Static pod path does not exist, ignoring", "path", s.path)
		return []*corev1.Pod{}, nil
	case err != nil:
		return nil, err
	}
	var files []string
	switch {
	case fi.IsDir():
		entries, err := os.ReadDir(s.path)
		if err != nil {
			return nil, err
		}
		for _, e := range entries { // sorted by name
			name := e.Name()
			if strings.HasPrefix(name, ".") || !isManifest(name) {
				continue
			}
			files = append(files, filepath.Join(s.path, name))
		}
	case fi.Mode().IsRegular():
		files = []string{s.path}
	default:
		return nil, fmt.Errorf("path %q is not a directory or file", s.path)
	}

	pods := []*corev1.Pod{}
	names := map[string]string{} // full name → file
	for _, f := range files {
		// Stat follows links, so a manifest may be a symlink to a file.
		fi, err := os.Stat(f)
		if err != nil {
			if !errors.Is(err, os.ErrNotExist) {
				s.log.Error("Could not process manifest file", "path", f, "err", err)
			}
			continue
		}
		if fi.IsDir() {
			s.log.Error("Provided manifest path is a directory, not recursing into manifest path", "path", f)
			continue
		}
		pod, err := s.readFile(f)
		if err != nil {
			s.log.Error("Could not process manifest file", "path", f, "err", err)
			continue
		}
		if other, dup := names[FullName(pod)]; dup {
			s.log.Error("Static pod has the full name of another, ignoring it", "path", f, "pod", pod.Metadata.Namespace+"/"+pod.Metadata.Name, "other", other)
			continue
		}
		names[FullName(pod)] = f
		pods = append(pods, pod)
	}
	return pods, nil
}

func isManifest(name string) bool {
	switch strings.ToLower(filepath.Ext(name)) {
	case ".yaml", ".yml", ".json":
		return true
	}
	return false
}

// readFile decodes one manifest into a defaulted static pod.
func (s *Source) readFile(path string) (*corev1.Pod, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	pod, err := decodePod(bytes.NewReader(data))
	var unknown *codec.UnknownFieldsError
	if errors.As(err, &unknown) {
		// Upstream's decoder drops unknown fields; say which, since a
		// typo in a manifest otherwise goes unnoticed.
		s.log.Warn("Ignoring unknown fields in a static pod manifest", "path", path, "fields", unknown.Fields)
		pod, err = decodePodLenient(data)
	}
	if err != nil {
		return nil, err
	}
	s.applyDefaults(pod, path)
	return pod, nil
}

func decodePod(r io.Reader) (*corev1.Pod, error) {
	return onePod(codec.ReadManifests(r, codec.Options{Strict: true}))
}

func decodePodLenient(data []byte) (*corev1.Pod, error) {
	return onePod(codec.ReadManifests(bytes.NewReader(data), codec.Options{}))
}

func onePod(docs []codec.Document, err error) (*corev1.Pod, error) {
	if err != nil {
		return nil, err
	}
	if len(docs) != 1 {
		return nil, fmt.Errorf("a manifest must hold one Pod, this one holds %d objects", len(docs))
	}
	pod, ok := docs[0].Object.(*corev1.Pod)
	if !ok {
		return nil, fmt.Errorf("the manifest is a %s, not a Pod", docs[0].Object.ProtoReflect().Descriptor().Name())
	}
	if pod.GetMetadata().GetName() == "" {
		return nil, errors.New("metadata.name: Required value: name is required")
	}
	if len(pod.GetSpec().GetContainers()) == 0 {
		return nil, errors.New("spec.containers: Required value")
	}
	return pod, nil
}

// applyDefaults is upstream's for a pod of a file: the v1 defaults, a UID
// hashing the pod with its node and file unless the manifest sets one, the
// name suffixed with the node's, namespace "default", the node, the config
// annotations, a toleration of every NoExecute taint (node problems do not
// evict static pods) and phase Pending.
func (s *Source) applyDefaults(pod *corev1.Pod, path string) {
	// Upstream's v1 defaults, which the apiserver applies to a created pod:
	// a static pod never passes through it, yet the workers read its
	// restartPolicy, grace period, imagePullPolicy and probe timings.
	defaults.Apply(pod)
	md := pod.Metadata
	if md.Uid == "" {
		b, _ := proto.MarshalOptions{Deterministic: true}.Marshal(pod)
		h := md5.New()
		h.Write(b)
		fmt.Fprintf(h, "host:%s", s.nodeName)
		fmt.Fprintf(h, "file:%s", path)
		md.Uid = hex.EncodeToString(h.Sum(nil))
	}
	md.Name = md.Name + "-" + strings.ToLower(s.nodeName)
	if md.Namespace == "" {
		md.Namespace = "default"
	}
	pod.Spec.NodeName = s.nodeName
	if md.Annotations == nil {
		md.Annotations = map[string]string{}
	}
	md.Annotations[ConfigHashAnnotation] = md.Uid
	md.Annotations[ConfigSourceAnnotation] = FileSource
	seen, ok := s.seen[md.Uid]
	if !ok {
		seen = s.now().Format(time.RFC3339Nano)
		s.seen[md.Uid] = seen
	}
	md.Annotations[ConfigFirstSeenAnnotation] = seen
	tolerateNoExecute(pod.Spec)
	pod.Status = &corev1.PodStatus{Phase: "Pending"}
}

func tolerateNoExecute(s *corev1.PodSpec) {
	for _, t := range s.Tolerations {
		if t.Key == "" && t.Operator == "Exists" && t.Value == "" && t.Effect == "NoExecute" && t.TolerationSeconds == nil {
			return
		}
	}
	s.Tolerations = append(s.Tolerations, &corev1.Toleration{Operator: "Exists", Effect: "NoExecute"})
}
