// Package bench is agnhost's bench-http and bench-dns subcommands, which
// upstream's agnhost lacks: a load client, run in a pod, that measures the
// same backends straight at their pod IPs and through a Service's
// ClusterIP in one run and prints the two side by side as one JSON line,
// so that the ratio is the cost of the Service path (Skiff's `make bench`).
//
// It sends traffic only to the addresses it is given: IP literals, no name
// lookups, no HTTP proxy from the environment, no redirects followed.
package bench

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Bounds are the limits of one comparison: each target gets at most
// Requests requests and Duration of measuring, split over 2×Rounds turns,
// whichever runs out first, so that a slow machine still finishes in
// seconds and a fast one is not measured on a few milliseconds.
type Bounds struct {
	Workers  int
	Requests int
	Duration time.Duration
	Rounds   int
	// Warmup is each target's requests before measuring, bounded by
	// Duration too.
	Warmup int
	// Timeout is one request's.
	Timeout time.Duration
	// Wait is how long the targets have to answer right before measuring;
	// 0 measures at once.
	Wait time.Duration
}

// addFlags registers the bounds; count names the flag of Requests, since
// a DNS client sends queries.
func (b *Bounds) addFlags(fs *flag.FlagSet, count string, timeout time.Duration) {
	fs.IntVar(&b.Workers, "workers", 8, "requests in flight at once")
	fs.IntVar(&b.Requests, count, 50000, "most "+count+" sent to each target, over all rounds")
	fs.DurationVar(&b.Duration, "duration", 5*time.Second, "most time spent measuring each target, over all rounds")
	fs.IntVar(&b.Rounds, "rounds", 3, "rounds of turns A B B A (direct, service, service, direct), among which --"+count+" and --duration are split")
	fs.IntVar(&b.Warmup, "warmup", 400, "unmeasured "+count+" to each target first (wrong answers among them still count)")
	fs.DurationVar(&b.Timeout, "timeout", timeout, "timeout of one request")
	fs.DurationVar(&b.Wait, "wait", 30*time.Second, "how long the targets have to answer right before measuring starts (0: start at once)")
}

func (b Bounds) validate(count string) error {
	switch {
	case b.Workers < 1:
		return fmt.Errorf("--workers must be at least 1, got %d", b.Workers)
	case b.Rounds < 1:
		return fmt.Errorf("--rounds must be at least 1, got %d", b.Rounds)
	case b.Requests < 2*b.Rounds:
		return fmt.Errorf("--%s must be at least 2×--rounds (%d) so every turn sends some, got %d", count, 2*b.Rounds, b.Requests)
	case b.Duration <= 0:
		return fmt.Errorf("--duration must be positive, got %s", b.Duration)
	case b.Warmup < 0:
		return fmt.Errorf("--warmup must not be negative, got %d", b.Warmup)
	case b.Timeout <= 0:
		return fmt.Errorf("--timeout must be positive, got %s", b.Timeout)
	case b.Wait < 0:
		return fmt.Errorf("--wait must not be negative, got %s", b.Wait)
	}
	return nil
}

// Report is the one JSON line a run prints.
type Report struct {
	Kind    string `json:"kind"` // "http" or "dns"
	Conn    string `json:"conn,omitempty"`
	Workers int    `json:"workers"`
	Rounds  int    `json:"rounds"`
	Direct  Result `json:"direct"`
	Service Result `json:"service"`
	// RatioPercent is Service's rate against Direct's.
	RatioPercent float64 `json:"ratio_percent"`
}

// Result is one target's measured turns.
type Result struct {
	Targets  []string `json:"targets"`
	Requests int      `json:"requests"`
	OK       int      `json:"ok"`
	// Errors are the requests that got no right answer: no answer at all
	// (refused, timed out, a non-200 status) or a Wrong one.
	Errors int `json:"errors"`
	Wrong  int `json:"wrong"`
	// WarmupWrong are the warm-up's wrong answers, outside the counts
	// above: a backend that answers for another is wrong whenever it is.
	WarmupWrong int    `json:"warmup_wrong"`
	FirstError  string `json:"first_error,omitempty"`
	FirstWrong  string `json:"first_wrong,omitempty"`
	// DurationSeconds is the sum of the target's turns.
	DurationSeconds float64 `json:"duration_seconds"`
	// Rate is right answers a second.
	Rate float64 `json:"rate"`
	// Latencies of the right answers: a max near a second is a SYN that
	// was retried.
	P50Ms float64 `json:"p50_ms"`
	P99Ms float64 `json:"p99_ms"`
	MaxMs float64 `json:"max_ms"`
}

// attempt makes the i-th request and says why its answer is not a right
// one (wrong, "" when it is); err is a request that got no answer.
type attempt func(ctx context.Context, i int64) (wrong string, err error)

type tally struct {
	requests, ok, failed, wrong int
	warmupWrong                 int
	firstErr, firstWrong        string
	elapsed                     time.Duration
	lat                         []time.Duration
}

func (t *tally) add(o tally) {
	t.requests += o.requests
	t.ok += o.ok
	t.failed += o.failed
	t.wrong += o.wrong
	t.warmupWrong += o.warmupWrong
	if t.firstErr == "" {
		t.firstErr = o.firstErr
	}
	if t.firstWrong == "" {
		t.firstWrong = o.firstWrong
	}
	t.elapsed += o.elapsed
	t.lat = append(t.lat, o.lat...)
}

func (t tally) result(targets []string) Result {
	r := Result{Targets: targets, Requests: t.requests, OK: t.ok, Errors: t.failed + t.wrong, Wrong: t.wrong,
		WarmupWrong: t.warmupWrong, FirstError: t.firstErr, FirstWrong: t.firstWrong, DurationSeconds: t.elapsed.Seconds()}
	if t.elapsed > 0 {
		r.Rate = float64(t.ok) / t.elapsed.Seconds()
	}
	if len(t.lat) > 0 {
		s := slices.Clone(t.lat)
		slices.Sort(s)
		r.P50Ms, r.P99Ms, r.MaxMs = ms(percentile(s, 50)), ms(percentile(s, 99)), ms(s[len(s)-1])
	}
	return r
}

// percentile of sorted durations, the nearest rank.
func percentile(sorted []time.Duration, p int) time.Duration {
	i := (len(sorted)*p + 99) / 100
	return sorted[min(max(i-1, 0), len(sorted)-1)]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// load makes requests from workers goroutines until maxReq have been
// started or d has passed (or ctx is done); a request started before then
// ends within its own timeout.
func load(ctx context.Context, workers, maxReq int, d time.Duration, do attempt) tally {
	var issued atomic.Int64
	tallies := make([]tally, workers)
	start := time.Now()
	deadline := start.Add(d)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			t := &tallies[w]
			for {
				i := issued.Add(1)
				if i > int64(maxReq) || time.Now().After(deadline) || ctx.Err() != nil {
					return
				}
				t0 := time.Now()
				wrong, err := do(ctx, i)
				took := time.Since(t0)
				t.requests++
				switch {
				case err != nil:
					t.failed++
					if t.firstErr == "" {
						t.firstErr = err.Error()
					}
				case wrong != "":
					t.wrong++
					if t.firstWrong == "" {
						t.firstWrong = wrong
					}
					if t.firstErr == "" {
						t.firstErr = wrong
					}
				default:
					t.ok++
					t.lat = append(t.lat, took)
				}
			}
		})
	}
	wg.Wait()
	var total tally
	for _, t := range tallies {
		total.add(t)
	}
	total.elapsed = time.Since(start)
	return total
}

// compare measures direct and service in turns, A B B A b.Rounds times,
// so that whatever drifts or comes in bursts during the run (the node's
// own work on the same cores, GC, a neighbour's load) weighs on both
// alike. A warm-up of each (keep-alive pools, conntrack, the servers'
// goroutines) comes first, outside the figures but for its wrong answers.
func compare(ctx context.Context, b Bounds, direct, service attempt) (d, s tally, err error) {
	d.warmupWrong, d.firstWrong = warm(ctx, b, direct)
	s.warmupWrong, s.firstWrong = warm(ctx, b, service)
	perTurn, turn := b.Requests/(2*b.Rounds), b.Duration/time.Duration(2*b.Rounds)
	for range b.Rounds {
		for _, t := range []struct {
			do attempt
			to *tally
		}{{direct, &d}, {service, &s}, {service, &s}, {direct, &d}} {
			t.to.add(load(ctx, b.Workers, perTurn, turn, t.do))
		}
	}
	return d, s, ctx.Err()
}

func warm(ctx context.Context, b Bounds, do attempt) (wrong int, first string) {
	if b.Warmup == 0 {
		return 0, ""
	}
	t := load(ctx, b.Workers, b.Warmup, b.Duration, do)
	return t.wrong, t.firstWrong
}

// waitReady calls ready until it says nothing is missing ("") or d has
// passed; an error names what was still missing.
func waitReady(ctx context.Context, d time.Duration, stderr io.Writer, ready func(context.Context) string) error {
	if d == 0 {
		return nil
	}
	start := time.Now()
	for {
		why := ready(ctx)
		if why == "" {
			fmt.Fprintf(stderr, "every target answering right after %s\n", time.Since(start).Round(time.Millisecond))
			return nil
		}
		if time.Since(start) > d {
			return fmt.Errorf("targets not answering right after %s (--wait): %s", d, why)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func newReport(kind, conn string, b Bounds, direct, service Result) Report {
	r := Report{Kind: kind, Conn: conn, Workers: b.Workers, Rounds: b.Rounds, Direct: direct, Service: service}
	if direct.Rate > 0 {
		r.RatioPercent = 100 * service.Rate / direct.Rate
	}
	return r
}

func writeReport(w io.Writer, r Report) error { return json.NewEncoder(w).Encode(r) }

// newFlagSet writes its errors and usage to stderr, after a synopsis line.
func newFlagSet(name, synopsis string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: agnhost %s %s\n\n", name, synopsis)
		fs.PrintDefaults()
	}
	return fs
}
