// Package resourceconsumer is agnhost's resource-consumer subcommand, the
// endpoints of upstream's resource-consumer image that autoscaling tests
// use to load a pod: POST /ConsumeCPU?millicores=&durationSec= burns that
// much CPU for that long, POST /ConsumeMem?megabytes=&durationSec= holds
// that much memory, and /GetCurrentStatus says what is being consumed.
// Parameters may come in the query or a form body, as upstream reads them.
package resourceconsumer

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"runtime"
	"strconv"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Bounds on one request, so a typo cannot pin a node for a day: upstream
// has none, but no test of ours loads a pod for longer than this.
const (
	maxDuration  = time.Hour
	maxMillicore = 64000
	maxMegabytes = 64 << 10
)

// Consumer runs the consumptions its handler is asked for.
type Consumer struct {
	mu         sync.Mutex
	millicores int
	megabytes  int
	stopAll    chan struct{}
}

// New returns an idle consumer.
func New() *Consumer { return &Consumer{stopAll: make(chan struct{})} }

// Close stops every consumption.
func (c *Consumer) Close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	select {
	case <-c.stopAll:
	default:
		close(c.stopAll)
	}
}

// Handler serves upstream's endpoints.
func (c *Consumer) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/ConsumeCPU", func(w http.ResponseWriter, r *http.Request) {
		n, d, ok := params(w, r, "millicores", maxMillicore)
		if !ok {
			return
		}
		go c.consumeCPU(n, d)
		fmt.Fprintf(w, "ConsumeCPU\n%d millicores\n%d durationSec\n", n, int(d/time.Second))
	})
	mux.HandleFunc("/ConsumeMem", func(w http.ResponseWriter, r *http.Request) {
		n, d, ok := params(w, r, "megabytes", maxMegabytes)
		if !ok {
			return
		}
		go c.consumeMem(n, d)
		fmt.Fprintf(w, "ConsumeMem\n%d megabytes\n%d durationSec\n", n, int(d/time.Second))
	})
	mux.HandleFunc("/GetCurrentStatus", func(w http.ResponseWriter, r *http.Request) {
		c.mu.Lock()
		st := map[string]int{"millicores": c.millicores, "megabytes": c.megabytes}
		c.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(st)
	})
	return mux
}

// params reads the amount called name and durationSec, answering 400 with
// the parameter at fault when one is missing or out of range.
func params(w http.ResponseWriter, r *http.Request, name string, limit int) (int, time.Duration, bool) {
	if r.Method != http.MethodPost {
		http.Error(w, "use POST", http.StatusMethodNotAllowed)
		return 0, 0, false
	}
	if err := r.ParseForm(); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return 0, 0, false
	}
	n, err := strconv.Atoi(r.Form.Get(name))
	if err != nil || n < 0 || n > limit {
		http.Error(w, fmt.Sprintf("%s: %q must be an integer from 0 to %d", name, r.Form.Get(name), limit), http.StatusBadRequest)
		return 0, 0, false
	}
	s, err := strconv.Atoi(r.Form.Get("durationSec"))
	if err != nil || s <= 0 || time.Duration(s)*time.Second > maxDuration {
		http.Error(w, fmt.Sprintf("durationSec: %q must be an integer from 1 to %d", r.Form.Get("durationSec"), int(maxDuration/time.Second)), http.StatusBadRequest)
		return 0, 0, false
	}
	return n, time.Duration(s) * time.Second, true
}

// slice is how often a burner looks at the CPU it has used: short enough
// that a sampled rate is even, long enough that the looking costs nothing.
const slice = 20 * time.Millisecond

// consumeCPU burns millicores for d, one goroutine per whole core or part
// of one. Each keeps to its share by the process's CPU time, not the wall
// clock, so a contended node gets no more than asked of it.
func (c *Consumer) consumeCPU(millicores int, d time.Duration) {
	c.add(&c.millicores, millicores)
	defer c.add(&c.millicores, -millicores)
	deadline := time.Now().Add(d)
	var wg sync.WaitGroup
	for left := millicores; left > 0; left -= 1000 {
		share := min(left, 1000)
		wg.Go(func() { c.burn(share, deadline) })
	}
	wg.Wait()
}

func (c *Consumer) burn(millicores int, deadline time.Time) {
	// Its own thread, so that the thread's CPU time is this burner's.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	used := threadCPU
	for time.Now().Before(deadline) {
		select {
		case <-c.stopAll:
			return
		default:
		}
		start, spent := time.Now(), used()
		budget := slice * time.Duration(millicores) / 1000
		for used()-spent < budget && time.Since(start) < slice {
		}
		if rest := slice - time.Since(start); rest > 0 {
			time.Sleep(rest)
		}
	}
}

// consumeMem holds megabytes, touched so they are resident, for d.
func (c *Consumer) consumeMem(megabytes int, d time.Duration) {
	c.add(&c.megabytes, megabytes)
	defer c.add(&c.megabytes, -megabytes)
	buf := make([]byte, megabytes<<20)
	for i := 0; i < len(buf); i += 4096 {
		buf[i] = 1
	}
	select {
	case <-time.After(d):
	case <-c.stopAll:
	}
	// Kept alive until here, whatever the compiler sees.
	_ = buf[len(buf)-1:]
}

func (c *Consumer) add(v *int, n int) {
	c.mu.Lock()
	*v += n
	c.mu.Unlock()
}

// threadCPU is the CPU time of the calling OS thread, to the nanosecond:
// getrusage's figure for a running thread lags by up to a scheduler tick,
// which overshot 300 millicores by a third.
func threadCPU() time.Duration {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts); err != nil {
		return 0
	}
	return time.Duration(ts.Nano())
}

// Main runs the server until it fails.
func Main(args []string) error {
	fs := flag.NewFlagSet("resource-consumer", flag.ContinueOnError)
	port := fs.Int("port", 8080, "port number")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *port < 1 || *port > 65535 {
		return fmt.Errorf("--port: %d is not a port", *port)
	}
	l, err := net.Listen("tcp", fmt.Sprintf(":%d", *port))
	if err != nil {
		return err
	}
	log.Printf("resource-consumer serving on port %d", *port)
	srv := &http.Server{Handler: New().Handler(), ReadHeaderTimeout: 10 * time.Second}
	if err := srv.Serve(l); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
