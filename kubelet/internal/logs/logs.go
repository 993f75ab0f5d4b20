// Package logs reads the containers' log files the runtime writes in the
// CRI format, for the kubelet's /containerLogs, with upstream's semantics
// of kubectl logs' options (kuberuntime/logs): tail lines counted from the
// file's end, since a time, at most so many bytes, timestamps, follow.
package logs

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"
)

// Options are what to read of a log, as upstream's LogOptions.
type Options struct {
	// Since drops entries older than it; zero keeps all.
	Since time.Time
	// Tail is how many of the last lines to start from; negative reads
	// the whole file.
	Tail int64
	// Bytes stops after this many bytes written; negative has no limit.
	Bytes int64
	// Follow keeps reading as the file grows while the container runs.
	Follow bool
	// Timestamps prefixes each entry with its time.
	Timestamps bool
}

// AllOptions reads the whole log once.
func AllOptions() Options { return Options{Tail: -1, Bytes: -1} }

// Stream is a log entry's stream.
type Stream string

const (
	Stdout Stream = "stdout"
	Stderr Stream = "stderr"
)

// Entry is one line of a CRI log file.
type Entry struct {
	Time    time.Time
	Stream  Stream
	Partial bool // tag P: the message continues in the next entry
	Message []byte
}

// timeFormatOut is upstream's RFC3339NanoFixed: fixed width, so
// timestamped lines align.
const timeFormatOut = "2006-01-02T15:04:05.000000000Z07:00"

// ParseCRI parses one line of the CRI log format, "2016-10-06T00:17:09.669794202Z
// stdout F message" (the trailing newline, if any, is not part of the
// message).
func ParseCRI(line []byte) (Entry, error) {
	line = bytes.TrimSuffix(line, []byte{'\n'})
	var e Entry
	ts, rest, ok := bytes.Cut(line, []byte{' '})
	if !ok {
		return e, fmt.Errorf("timestamp is not found")
	}
	t, err := time.Parse(time.RFC3339Nano, string(ts))
	if err != nil {
		return e, fmt.Errorf("unexpected timestamp format %q: %w", ts, err)
	}
	stream, rest, ok := bytes.Cut(rest, []byte{' '})
	if !ok {
		return e, fmt.Errorf("stream type is not found")
	}
	switch s := Stream(stream); s {
	case Stdout, Stderr:
		e.Stream = s
	default:
		return e, fmt.Errorf("unexpected stream type %q", stream)
	}
	// The tag is "P" or "F", possibly more tags after a ':'; upstream
	// reads only the first.
	tag, msg, ok := bytes.Cut(rest, []byte{' '})
	if !ok {
		// An empty full line is written as "... stdout F" by some runtimes.
		tag, msg = rest, nil
	}
	first, _, _ := bytes.Cut(tag, []byte{':'})
	switch string(first) {
	case "P":
		e.Partial = true
	case "F":
	default:
		return e, fmt.Errorf("unexpected log tag %q", tag)
	}
	e.Time, e.Message = t, msg
	return e, nil
}

// TailStart is the offset of the first of the last n lines of f (0 for a
// negative n, the size for n 0), as upstream's tail.FindTailLineStartIndex.
func TailStart(f io.ReadSeeker, n int64) (int64, error) {
	if n < 0 {
		return 0, nil
	}
	size, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return 0, err
	}
	const block = 4096
	buf := make([]byte, block)
	// Walk back until n+1 newlines lie at or after left: the first of
	// them ends the line before the tail.
	var cnt int64
	for right := size; right > 0; {
		left := max(right-block, 0)
		b := buf[:right-left]
		if _, err := f.Seek(left, io.SeekStart); err != nil {
			return 0, err
		}
		if _, err := io.ReadFull(f, b); err != nil {
			return 0, err
		}
		for i := len(b) - 1; i >= 0; i-- {
			if b[i] == '\n' {
				cnt++
				if cnt > n {
					return left + int64(i) + 1, nil
				}
			}
		}
		right = left
	}
	return 0, nil
}

// errLimit ends a read at Options.Bytes.
var errLimit = errors.New("log byte limit reached")

// pollInterval is how often a followed log is checked for growth (upstream
// waits on fsnotify, with a one-second forced check).
var pollInterval = 200 * time.Millisecond

// Read writes the log at path to stdout and stderr as opts ask. With
// Follow it keeps reading at the end of the file until ctx ends or
// running reports the container stopped (then it reads what is left and
// returns). Lines it cannot parse are skipped, as upstream does.
func Read(ctx context.Context, path string, opts Options, running func(context.Context) bool, stdout, stderr io.Writer) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("failed to open log file %q: %w", path, err)
	}
	// next is the file the runtime reopened at path after a rotation,
	// read once f, the renamed one, is read to its end.
	var next *os.File
	defer func() {
		f.Close()
		if next != nil {
			next.Close()
		}
	}()
	start, err := TailStart(f, opts.Tail)
	if err != nil {
		return fmt.Errorf("failed to tail %d lines of log file %q: %w", opts.Tail, path, err)
	}
	if _, err := f.Seek(start, io.SeekStart); err != nil {
		return err
	}
	w := &writer{opts: opts, stdout: stdout, stderr: stderr, remain: opts.Bytes}
	r := bufio.NewReader(f)
	var pending []byte // a line the runtime has not finished writing
	stopped := false
	for {
		line, err := r.ReadBytes('\n')
		if err == nil {
			if len(pending) > 0 {
				line = append(pending, line...)
				pending = nil
			}
			if werr := w.line(line); werr != nil {
				if errors.Is(werr, errLimit) {
					return nil
				}
				return werr
			}
			continue
		}
		if !errors.Is(err, io.EOF) {
			return fmt.Errorf("failed to read log file %q: %w", path, err)
		}
		pending = append(pending, line...)
		if !opts.Follow {
			if len(pending) > 0 {
				// A file cut mid-line (a crash, a full disk): show what is there.
				if werr := w.line(pending); werr != nil && !errors.Is(werr, errLimit) {
					return werr
				}
			}
			return nil
		}
		if next != nil {
			// Lines end at a rotation: the runtime reopens between writes.
			if len(pending) > 0 {
				if werr := w.line(pending); werr != nil {
					if errors.Is(werr, errLimit) {
						return nil
					}
					return werr
				}
				pending = nil
			}
			f.Close()
			f, next = next, nil
			r.Reset(f)
			continue
		}
		if next = reopened(f, path); next != nil {
			// One more pass over f: what was written before the rename.
			continue
		}
		if stopped {
			return nil
		}
		if running != nil && !running(ctx) {
			// One more pass: what the container wrote before it stopped.
			stopped = true
			continue
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(pollInterval):
		}
	}
}

// reopened is the file now at path when it is no longer f, as after a
// rotation (logrotate renames the log, the runtime opens a new one at its
// path); upstream's ReadLogs watches for it with fsnotify.
func reopened(f *os.File, path string) *os.File {
	cur, err := os.Stat(path)
	if err != nil {
		return nil // not there yet: the runtime is reopening it
	}
	if old, err := f.Stat(); err != nil || os.SameFile(old, cur) {
		return nil
	}
	nf, err := os.Open(path)
	if err != nil {
		return nil
	}
	return nf
}

type writer struct {
	opts           Options
	stdout, stderr io.Writer
	remain         int64
}

func (w *writer) line(line []byte) error {
	e, err := ParseCRI(line)
	if err != nil {
		return nil // upstream logs and skips a malformed line
	}
	if !w.opts.Since.IsZero() && e.Time.Before(w.opts.Since) {
		return nil
	}
	out := w.stdout
	if e.Stream == Stderr {
		out = w.stderr
	}
	var b []byte
	if w.opts.Timestamps {
		b = append(b, e.Time.Format(timeFormatOut)...)
		b = append(b, ' ')
	}
	b = append(b, e.Message...)
	if !e.Partial {
		b = append(b, '\n')
	}
	limited := false
	if w.remain >= 0 && int64(len(b)) >= w.remain {
		b, limited = b[:w.remain], true
	}
	if len(b) > 0 {
		if _, err := out.Write(b); err != nil {
			return err
		}
	}
	if w.remain >= 0 {
		w.remain -= int64(len(b))
	}
	if limited {
		return errLimit
	}
	return nil
}
