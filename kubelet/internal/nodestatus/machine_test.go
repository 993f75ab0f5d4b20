package nodestatus

import (
	"os"
	"path/filepath"
	"testing"
)

func TestMachineParsers(t *testing.T) {
	if b, err := memTotal([]byte("MemTotal:        8148008 kB\nMemFree:  1 kB\n")); err != nil || b != 8148008*1024 {
		t.Errorf("memTotal = %d, %v", b, err)
	}
	if _, err := memTotal([]byte("MemFree: 1 kB\n")); err == nil {
		t.Error("memTotal without MemTotal: no error")
	}
	if s := prettyName([]byte("NAME=\"Debian GNU/Linux\"\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n")); s != "Debian GNU/Linux 12 (bookworm)" {
		t.Errorf("prettyName = %q", s)
	}
	if s := prettyName([]byte("NAME=x\n")); s != "Linux" {
		t.Errorf("prettyName without PRETTY_NAME = %q", s)
	}
	route := "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n" +
		"cni0\t0001F40A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n" +
		"eth0\t00000000\t0101A8C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n"
	if i := defaultRouteInterface([]byte(route)); i != "eth0" {
		t.Errorf("defaultRouteInterface = %q", i)
	}
	for b, want := range map[int64]string{2 << 20: "2Mi", 1 << 30: "1Gi", 64 << 10: "64Ki"} {
		if got := pageSizeName(b); got != want {
			t.Errorf("pageSizeName(%d) = %q, want %q", b, got, want)
		}
	}
	dir := t.TempDir()
	for name, n := range map[string]string{"hugepages-2048kB": "3\n", "hugepages-1048576kB": "0\n"} {
		if err := os.MkdirAll(filepath.Join(dir, name), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name, "nr_hugepages"), []byte(n), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	hp := hugePages(dir)
	if len(hp) != 2 || hp["hugepages-2Mi"] != 6<<20 || hp["hugepages-1Gi"] != 0 {
		t.Errorf("hugePages = %v", hp)
	}
}

// The real machine reads without error (whatever it holds).
func TestReadMachine(t *testing.T) {
	m, err := ReadMachine(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if m.NumCores < 1 || m.MemoryBytes <= 0 || m.EphemeralStorageBytes <= 0 || m.KernelVersion == "" {
		t.Errorf("machine %+v", m)
	}
}
