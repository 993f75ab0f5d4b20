package job

import (
	"log/slog"
	"slices"
	"strconv"
	"strings"

	batchv1 "skiff.dev/proto/api/batch/v1"
	corev1 "skiff.dev/proto/api/core/v1"
)

// Keys and names upstream's Indexed Jobs use.
const (
	completionIndexKey          = "batch.kubernetes.io/job-completion-index"
	indexFailureCountKey        = "batch.kubernetes.io/job-index-failure-count"
	indexIgnoredFailureCountKey = "batch.kubernetes.io/job-index-ignored-failure-count"
	completionIndexEnv          = "JOB_COMPLETION_INDEX"
	noIndex                     = -1
	// maxGeneratedNameLength is upstream's names.MaxGeneratedNameLength:
	// room for the apiserver's five-character suffix in a 63-character name.
	maxGeneratedNameLength = 63 - 5
)

// interval is a closed range of completion indexes.
type interval struct{ first, last int }

// intervals are disjoint, non-adjacent intervals in increasing order: the
// form of status.completedIndexes and status.failedIndexes.
type intervals []interval

// parseIntervals reads "1,3-5,7" and keeps only indexes below completions;
// a malformed piece is skipped, as upstream does.
func parseIntervals(log *slog.Logger, s string, completions int) intervals {
	if s == "" {
		return nil
	}
	var out intervals
	for _, piece := range strings.Split(s, ",") {
		bounds := strings.Split(piece, "-")
		first, err := strconv.Atoi(bounds[0])
		if err != nil {
			log.Info("Corrupted indexes interval, ignoring", "interval", piece, "err", err)
			continue
		}
		if first >= completions {
			break
		}
		last := first
		if len(bounds) > 1 {
			if last, err = strconv.Atoi(bounds[1]); err != nil {
				log.Info("Corrupted indexes interval, ignoring", "interval", piece, "err", err)
				continue
			}
			last = min(last, completions-1)
		}
		if n := len(out); n > 0 && out[n-1].last == first-1 {
			out[n-1].last = last
		} else {
			out = append(out, interval{first, last})
		}
	}
	return out
}

// String is upstream's compressed form: ranges of three or more as "a-b",
// pairs as "a,b".
func (iv intervals) String() string {
	var b strings.Builder
	for _, v := range iv {
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.Itoa(v.first))
		switch {
		case v.last == v.first+1:
			b.WriteByte(',')
			b.WriteString(strconv.Itoa(v.last))
		case v.last > v.first:
			b.WriteByte('-')
			b.WriteString(strconv.Itoa(v.last))
		}
	}
	return b.String()
}

func (iv intervals) total() int {
	n := 0
	for _, v := range iv {
		n += v.last - v.first + 1
	}
	return n
}

func (iv intervals) has(ix int) bool {
	i, _ := slices.BinarySearchFunc(iv, ix, func(v interval, t int) int {
		if v.last < t {
			return -1
		}
		return 1
	})
	return i < len(iv) && iv[i].first <= ix
}

// merge is the union of two interval lists.
func (iv intervals) merge(other intervals) intervals {
	all := append(slices.Clone(iv), other...)
	slices.SortFunc(all, func(a, b interval) int { return a.first - b.first })
	var out intervals
	for _, v := range all {
		if n := len(out); n > 0 && v.first <= out[n-1].last+1 {
			out[n-1].last = max(out[n-1].last, v.last)
			continue
		}
		out = append(out, v)
	}
	return out
}

// withIndexes is iv with the given indexes added.
func (iv intervals) withIndexes(ixs []int) intervals {
	add := make(intervals, len(ixs))
	for i, x := range ixs {
		add[i] = interval{x, x}
	}
	return iv.merge(add)
}

// completionIndex is the pod's index annotation, or noIndex.
func completionIndex(p *corev1.Pod) int {
	v, ok := p.GetMetadata().GetAnnotations()[completionIndexKey]
	if !ok {
		return noIndex
	}
	i, err := strconv.Atoi(v)
	if err != nil || i < 0 {
		return noIndex
	}
	return i
}

// validIndex reports an index annotation within [0, completions).
func validIndex(p *corev1.Pod, completions int32) (int, bool) {
	ix := completionIndex(p)
	return ix, ix != noIndex && ix < int(completions)
}

func indexesOf(pods []*corev1.Pod) []int {
	seen := map[int]bool{}
	var out []int
	for _, p := range pods {
		if ix := completionIndex(p); ix != noIndex && !seen[ix] {
			seen[ix] = true
			out = append(out, ix)
		}
	}
	slices.Sort(out)
	return out
}

// annotationInt32 parses a non-negative int32 annotation; anything else
// (absent, garbage, out of range) is 0, as upstream.
func annotationInt32(p *corev1.Pod, key string) int32 {
	v, ok := p.GetMetadata().GetAnnotations()[key]
	if !ok {
		return 0
	}
	n, err := strconv.ParseInt(v, 10, 32)
	if err != nil || n < 0 {
		return 0
	}
	return int32(n)
}

func indexFailureCount(p *corev1.Pod) int32 { return annotationInt32(p, indexFailureCountKey) }

func indexAbsoluteFailureCount(p *corev1.Pod) int32 {
	return annotationInt32(p, indexFailureCountKey) + annotationInt32(p, indexIgnoredFailureCountKey)
}

// podGenerateNameWithIndex is "<job>-<index>-", the job name shortened so
// that the generated name fits.
func podGenerateNameWithIndex(jobName string, index int) string {
	suffix := "-" + strconv.Itoa(index) + "-"
	prefix := jobName + suffix
	if len(prefix) > maxGeneratedNameLength {
		prefix = jobName[:maxGeneratedNameLength-len(suffix)] + suffix
	}
	return prefix
}

// addCompletionIndexEnv gives every container JOB_COMPLETION_INDEX from the
// pod's index annotation, unless the container sets it itself.
func addCompletionIndexEnv(spec *corev1.PodSpec) {
	add := func(c *corev1.Container) {
		for _, e := range c.GetEnv() {
			if e.GetName() == completionIndexEnv {
				return
			}
		}
		c.Env = append(c.Env, &corev1.EnvVar{Name: completionIndexEnv, ValueFrom: &corev1.EnvVarSource{
			FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.annotations['" + completionIndexKey + "']"}}})
	}
	for _, c := range spec.GetInitContainers() {
		add(c)
	}
	for _, c := range spec.GetContainers() {
		add(c)
	}
}

// firstPendingIndexes are the first count indexes below completions that
// no active pod runs and that have neither succeeded nor failed (nor, when
// only failed pods are replaced, still terminate).
func firstPendingIndexes(jc *syncCtx, count, completions int) []int {
	if count == 0 {
		return nil
	}
	busy := jc.succeededIndexes.withIndexes(indexesOf(jc.activePods))
	if onlyReplaceFailedPods(jc.job) {
		busy = busy.withIndexes(indexesOf(terminatingPods(jc.pods)))
	}
	if jc.failedIndexes != nil {
		busy = busy.merge(*jc.failedIndexes)
	}
	var out []int
	next := 0
	for _, v := range busy {
		for ; next < completions && len(out) < count && next < v.first; next++ {
			out = append(out, next)
		}
		next = max(next, v.last+1)
	}
	for ; next < completions && len(out) < count; next++ {
		out = append(out, next)
	}
	return out
}

// duplicateIndexPodsForRemoval splits active pods of an Indexed Job into
// those to delete (no index, an index out of range, all but the best pod of
// a repeated index) and the rest.
func duplicateIndexPodsForRemoval(pods []*corev1.Pod, completions int32) (rm, left []*corev1.Pod) {
	byIndex := map[int][]*corev1.Pod{}
	for _, p := range pods {
		ix, ok := validIndex(p, completions)
		if !ok {
			rm = append(rm, p)
			continue
		}
		byIndex[ix] = append(byIndex[ix], p)
	}
	keys := make([]int, 0, len(byIndex))
	for k := range byIndex {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		same := byIndex[k]
		sortActivePods(same)
		rm = append(rm, same[:len(same)-1]...)
		left = append(left, same[len(same)-1])
	}
	return rm, left
}

// calculateSucceededIndexes are the indexes in status.completedIndexes,
// and those plus the indexes of succeeded pods not yet counted.
func calculateSucceededIndexes(log *slog.Logger, job *batchv1.Job, pods []*corev1.Pod) (prev, cur intervals) {
	completions := *job.Spec.Completions
	prev = parseIntervals(log, job.GetStatus().GetCompletedIndexes(), int(completions))
	var added []int
	for _, p := range pods {
		if ix, ok := validIndex(p, completions); ok && p.GetStatus().GetPhase() == "Succeeded" && hasTrackingFinalizer(p) {
			added = append(added, ix)
		}
	}
	return prev, prev.withIndexes(added)
}

// calculateFailedIndexes are status.failedIndexes plus the indexes whose
// pods just failed for good (backoffLimitPerIndex or a FailIndex rule).
func calculateFailedIndexes(log *slog.Logger, job *batchv1.Job, pods []*corev1.Pod) *intervals {
	completions := *job.Spec.Completions
	var prev intervals
	if f := job.GetStatus().FailedIndexes; f != nil {
		prev = parseIntervals(log, *f, int(completions))
	}
	var added []int
	for _, p := range pods {
		if ix, ok := validIndex(p, completions); ok && hasTrackingFinalizer(p) && isIndexFailed(job, p) {
			added = append(added, ix)
		}
	}
	out := prev.withIndexes(added)
	return &out
}

func isIndexFailed(job *batchv1.Job, p *corev1.Pod) bool {
	if !isPodFailed(p, job) {
		return false
	}
	counted := true
	if pfp := job.Spec.GetPodFailurePolicy(); pfp != nil {
		m := matchPodFailurePolicy(pfp, p)
		if m.action == actionFailIndex {
			return true
		}
		counted = m.countFailed
	}
	return counted && indexFailureCount(p) >= job.Spec.GetBackoffLimitPerIndex()
}

// podsWithDelayedDeletionPerIndex holds, for each index that has failed but
// is to be retried, its last failed pod: its finalizer stays until the
// replacement exists, which inherits its failure count.
func podsWithDelayedDeletionPerIndex(jc *syncCtx) map[int]*corev1.Pod {
	active := map[int]bool{}
	for _, ix := range indexesOf(jc.activePods) {
		active[ix] = true
	}
	out := map[int]*corev1.Pod{}
	for _, p := range jc.trackedPods(nil) {
		if !isPodFailed(p, jc.job) {
			continue
		}
		ix, ok := validIndex(p, *jc.job.Spec.Completions)
		if !ok || jc.succeededIndexes.has(ix) || (jc.failedIndexes != nil && jc.failedIndexes.has(ix)) || active[ix] {
			continue
		}
		if last, ok := out[ix]; ok {
			if indexAbsoluteFailureCount(last) <= indexAbsoluteFailureCount(p) && !finishedTime(p).Before(finishedTime(last)) {
				out[ix] = p
			}
		} else {
			out[ix] = p
		}
	}
	return out
}

// newIndexFailureCounts are the failure-count annotations of the pod that
// replaces podBeingReplaced.
func newIndexFailureCounts(job *batchv1.Job, replaced *corev1.Pod) (failed, ignored int32) {
	if replaced == nil {
		return 0, 0
	}
	failed, ignored = indexFailureCount(replaced), annotationInt32(replaced, indexIgnoredFailureCountKey)
	if pfp := job.Spec.GetPodFailurePolicy(); pfp != nil && !matchPodFailurePolicy(pfp, replaced).countFailed {
		ignored++
	} else {
		failed++
	}
	return failed, ignored
}
