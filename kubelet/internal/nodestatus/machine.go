package nodestatus

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Machine is what the node reports of the host: cadvisor's MachineInfo and
// VersionInfo, the parts upstream's node status setters read.
type Machine struct {
	NumCores    int
	MemoryBytes int64
	// EphemeralStorageBytes is the capacity of the filesystem holding
	// --root-dir (upstream's RootFsInfo.Capacity).
	EphemeralStorageBytes int64
	// HugePages is bytes per page size, keyed by the resource name
	// ("hugepages-2Mi"), zero where none are reserved.
	HugePages map[string]int64

	MachineID, SystemUUID, BootID string
	KernelVersion, OSImage        string
}

// ReadMachine reads the host the kubelet runs on. Files that a container or
// a VM may lack (product_uuid needs root, machine-id may be absent) leave
// their field empty, as cadvisor does.
func ReadMachine(rootDir string) (*Machine, error) {
	m := &Machine{NumCores: runtime.NumCPU(), HugePages: map[string]int64{}}
	mem, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return nil, err
	}
	if m.MemoryBytes, err = memTotal(mem); err != nil {
		return nil, err
	}
	var st unix.Statfs_t
	if err := unix.Statfs(rootDir, &st); err != nil {
		return nil, fmt.Errorf("statfs %s: %w", rootDir, err)
	}
	m.EphemeralStorageBytes = int64(st.Blocks) * st.Bsize
	m.HugePages = hugePages("/sys/kernel/mm/hugepages")
	m.MachineID = readTrimmed("/etc/machine-id")
	m.SystemUUID = readTrimmed("/sys/class/dmi/id/product_uuid")
	m.BootID = readTrimmed("/proc/sys/kernel/random/boot_id")
	var u unix.Utsname
	if err := unix.Uname(&u); err == nil {
		m.KernelVersion = unix.ByteSliceToString(u.Release[:])
	}
	if b, err := os.ReadFile("/etc/os-release"); err == nil {
		m.OSImage = prettyName(b)
	}
	return m, nil
}

func readTrimmed(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// memTotal is MemTotal of /proc/meminfo in bytes.
func memTotal(meminfo []byte) (int64, error) {
	s := bufio.NewScanner(bytes.NewReader(meminfo))
	for s.Scan() {
		f := strings.Fields(s.Text())
		if len(f) >= 2 && f[0] == "MemTotal:" {
			kb, err := strconv.ParseInt(f[1], 10, 64)
			if err != nil {
				return 0, fmt.Errorf("meminfo: MemTotal %q: %w", f[1], err)
			}
			return kb * 1024, nil
		}
	}
	return 0, fmt.Errorf("meminfo: no MemTotal")
}

// prettyName is PRETTY_NAME of an os-release file, cadvisor's
// ContainerOsVersion; "Linux" when there is none, as cadvisor says.
func prettyName(osRelease []byte) string {
	s := bufio.NewScanner(bytes.NewReader(osRelease))
	for s.Scan() {
		if v, ok := strings.CutPrefix(s.Text(), "PRETTY_NAME="); ok {
			if u, err := strconv.Unquote(v); err == nil {
				return u
			}
			return strings.Trim(v, `"'`)
		}
	}
	return "Linux"
}

// hugePages reads every page size the kernel supports
// (hugepages-2048kB/nr_hugepages) into upstream's resource names.
func hugePages(dir string) map[string]int64 {
	out := map[string]int64{}
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		kb, ok := strings.CutPrefix(e.Name(), "hugepages-")
		if !ok {
			continue
		}
		kb, ok = strings.CutSuffix(kb, "kB")
		size, err := strconv.ParseInt(kb, 10, 64)
		if !ok || err != nil {
			continue
		}
		n, _ := strconv.ParseInt(readTrimmed(filepath.Join(dir, e.Name(), "nr_hugepages")), 10, 64)
		out["hugepages-"+pageSizeName(size*1024)] = n * size * 1024
	}
	return out
}

// pageSizeName writes a page size as upstream's HugePageResourceName does
// (resource.NewQuantity(size, BinarySI).String(): 2Mi, 1Gi).
func pageSizeName(bytes int64) string {
	for _, u := range []struct {
		suffix string
		shift  uint
	}{{"Ei", 60}, {"Pi", 50}, {"Ti", 40}, {"Gi", 30}, {"Mi", 20}, {"Ki", 10}} {
		if bytes >= 1<<u.shift && bytes%(1<<u.shift) == 0 {
			return strconv.FormatInt(bytes>>u.shift, 10) + u.suffix
		}
	}
	return strconv.FormatInt(bytes, 10)
}

// HostIP is the address a node without --node-ip reports: an address of
// the interface holding the default route (upstream's ChooseHostInterface),
// else the first global unicast address of any interface, IPv4 first.
func HostIP() (string, error) {
	if route, err := os.ReadFile("/proc/net/route"); err == nil {
		if name := defaultRouteInterface(route); name != "" {
			if ifc, err := net.InterfaceByName(name); err == nil {
				if addrs, err := ifc.Addrs(); err == nil {
					if ip := firstGlobal(addrs); ip != "" {
						return ip, nil
					}
				}
			}
		}
	}
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return "", err
	}
	if ip := firstGlobal(addrs); ip != "" {
		return ip, nil
	}
	return "", fmt.Errorf("no global unicast address on any interface; set --node-ip")
}

// defaultRouteInterface is the interface of the IPv4 default route in a
// /proc/net/route table.
func defaultRouteInterface(table []byte) string {
	s := bufio.NewScanner(bytes.NewReader(table))
	for s.Scan() {
		f := strings.Fields(s.Text())
		if len(f) >= 8 && f[1] == "00000000" && f[7] == "00000000" {
			return f[0]
		}
	}
	return ""
}

func firstGlobal(addrs []net.Addr) string {
	var v6 string
	for _, a := range addrs {
		n, ok := a.(*net.IPNet)
		if !ok || !n.IP.IsGlobalUnicast() {
			continue
		}
		if n.IP.To4() != nil {
			return n.IP.String()
		}
		if v6 == "" {
			v6 = n.IP.String()
		}
	}
	return v6
}
