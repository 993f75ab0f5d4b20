package app

import (
	"bufio"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
)

// host is what choosing a default --advertise-address looks at; tests fake it.
type host struct {
	// routes is /proc/net/route.
	routes func() (io.ReadCloser, error)
	// interfaces are the host's network interfaces and their addresses.
	interfaces func() ([]hostInterface, error)
}

type hostInterface struct {
	name  string
	up    bool
	addrs []netip.Prefix
}

var realHost = host{
	routes: func() (io.ReadCloser, error) { return os.Open("/proc/net/route") },
	interfaces: func() ([]hostInterface, error) {
		ifs, err := net.Interfaces()
		if err != nil {
			return nil, err
		}
		var out []hostInterface
		for _, i := range ifs {
			hi := hostInterface{name: i.Name, up: i.Flags&net.FlagUp != 0}
			addrs, _ := i.Addrs()
			for _, a := range addrs {
				if n, ok := a.(*net.IPNet); ok {
					if p, err := netip.ParsePrefix(n.String()); err == nil {
						hi.addrs = append(hi.addrs, p)
					}
				}
			}
			out = append(out, hi)
		}
		return out, nil
	},
}

// advertiseAddress is --advertise-address, or upstream's default: the bind
// address when it names one address of this host other than loopback, else
// the IPv4 address of the interface the default route leaves by, else the
// first up interface's global IPv4 address. Pods reach the API there
// through the kubernetes Service, so loopback is refused.
func (o *Options) advertiseAddress(h host) (netip.Addr, error) {
	if o.AdvertiseAddress != "" {
		a, err := netip.ParseAddr(o.AdvertiseAddress)
		if err != nil {
			return netip.Addr{}, fmt.Errorf("--advertise-address: %q is not an IP address", o.AdvertiseAddress)
		}
		return a.Unmap(), nil
	}
	if b, err := netip.ParseAddr(o.BindAddress); err == nil && !b.IsUnspecified() && !b.IsLoopback() {
		return b.Unmap(), nil
	}
	ifs, err := h.interfaces()
	if err != nil {
		return netip.Addr{}, fmt.Errorf("--advertise-address: listing this host's interfaces: %w", err)
	}
	global := func(i hostInterface) (netip.Addr, bool) {
		for _, p := range i.addrs {
			if a := p.Addr().Unmap(); i.up && a.Is4() && a.IsGlobalUnicast() && !a.IsLoopback() {
				return a, true
			}
		}
		return netip.Addr{}, false
	}
	if dev, err := defaultRouteInterface(h); err == nil {
		for _, i := range ifs {
			if i.name == dev {
				if a, ok := global(i); ok {
					return a, nil
				}
			}
		}
	}
	for _, i := range ifs {
		if a, ok := global(i); ok {
			return a, nil
		}
	}
	return netip.Addr{}, errors.New("--advertise-address: this host has no IPv4 address other than loopback, which pods cannot reach; give one they can")
}

// defaultRouteInterface is the interface of the IPv4 default route.
func defaultRouteInterface(h host) (string, error) {
	f, err := h.routes()
	if err != nil {
		return "", err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 8 || fields[0] == "Iface" {
			continue
		}
		dst, err := hex.DecodeString(fields[1])
		if err != nil || len(dst) != 4 || fields[7] != "00000000" {
			continue
		}
		if dst[0]|dst[1]|dst[2]|dst[3] == 0 {
			return fields[0], nil
		}
	}
	return "", errors.New("no default route")
}

// checkAdvertise refuses what pods cannot reach.
func checkAdvertise(a netip.Addr) error {
	switch {
	case a.IsLoopback():
		return fmt.Errorf("--advertise-address: %s is a loopback address, which pods cannot reach; give an address of this host they can", a)
	case a.IsUnspecified():
		return fmt.Errorf("--advertise-address: %s is not one address", a)
	}
	return nil
}
