package main

import (
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// state reads a process's state letter from /proc (Z for a zombie).
func state(t *testing.T, pid int) string {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return "" // gone
	}
	s := string(b)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	return fields[0]
}

func TestReapCollectsZombies(t *testing.T) {
	var pids []int
	for i := 0; i < 3; i++ {
		cmd := exec.Command("/bin/true")
		if err := cmd.Start(); err != nil {
			t.Skipf("cannot start /bin/true: %v", err)
		}
		pids = append(pids, cmd.Process.Pid)
	}
	deadline := time.Now().Add(5 * time.Second)
	for _, pid := range pids {
		for state(t, pid) != "Z" {
			if time.Now().After(deadline) {
				t.Fatalf("child %d did not become a zombie", pid)
			}
			time.Sleep(time.Millisecond)
		}
	}
	if n := reap(); n != len(pids) {
		t.Errorf("reap() = %d, want %d", n, len(pids))
	}
	for _, pid := range pids {
		if s := state(t, pid); s != "" {
			t.Errorf("child %d still in state %q after reap", pid, s)
		}
	}
}

func TestRunExitsZeroOnTerm(t *testing.T) {
	sigs := make(chan os.Signal, 2)
	sigs <- syscall.SIGCHLD
	sigs <- syscall.SIGTERM
	if code := run(sigs); code != 0 {
		t.Errorf("run = %d after SIGTERM, want 0", code)
	}
}
