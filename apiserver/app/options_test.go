package app

import (
	"io"
	"net/netip"
	"strings"
	"testing"
)

func TestServiceFlagsAreValidated(t *testing.T) {
	for _, tc := range []struct {
		set  func(*Options)
		want string
	}{
		{func(o *Options) { o.ServiceClusterIPRange = "10.96.0.0" }, `--service-cluster-ip-range: [0]: "10.96.0.0" is not a CIDR`},
		{func(o *Options) { o.ServiceClusterIPRange = "10.0.0.0/8" }, "--service-cluster-ip-range: [0]: 10.0.0.0/8 is too large; for 32-bit addresses, the mask must be >= 12"},
		{func(o *Options) { o.ServiceClusterIPRange = "10.96.0.0/12,10.100.0.0/16" }, "--service-cluster-ip-range: 10.96.0.0/12 and 10.100.0.0/16 must be of different IP families"},
		{func(o *Options) { o.ServiceNodePortRange = "30000-29000" }, "--service-node-port-range: "},
		{func(o *Options) { o.ServiceNodePortRange = "60000-70000" }, "--service-node-port-range: "},
		{func(o *Options) { o.AdvertiseAddress = "127.0.0.1" }, "--advertise-address: 127.0.0.1 is a loopback address, which pods cannot reach"},
		{func(o *Options) { o.AdvertiseAddress = "::1" }, "--advertise-address: ::1 is a loopback address"},
		{func(o *Options) { o.AdvertiseAddress = "0.0.0.0" }, "--advertise-address: 0.0.0.0 is not one address"},
		{func(o *Options) { o.AdvertiseAddress = "host" }, `--advertise-address: "host" is not an IP address`},
		{func(o *Options) { o.EndpointReconcilerType = "master-count" }, `--endpoint-reconciler-type: "master-count" is not supported (supported: lease)`},
		{func(o *Options) { o.EndpointReconcileInterval = 20e9 }, "--endpoint-reconcile-interval: 20s must be positive and below --endpoint-lease-ttl (15s)"},
		{func(o *Options) { o.ServiceAllocationRepairInterval = 0 }, "--service-allocation-repair-interval: 0s must be positive"},
	} {
		o := NewOptions()
		tc.set(o)
		err := o.Validate()
		if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("got %v, want %s…", err, tc.want)
		}
	}
	o := NewOptions()
	o.ServiceClusterIPRange, o.ServiceNodePortRange, o.AdvertiseAddress = "fd00::/108,10.0.0.0/16", "31000+99", "192.0.2.7"
	if err := o.Validate(); err != nil {
		t.Fatal(err)
	}
}

func fakeHost(routes string, ifs ...hostInterface) host {
	return host{
		routes:     func() (io.ReadCloser, error) { return io.NopCloser(strings.NewReader(routes)), nil },
		interfaces: func() ([]hostInterface, error) { return ifs, nil },
	}
}

func iface(name string, up bool, addrs ...string) hostInterface {
	i := hostInterface{name: name, up: up}
	for _, a := range addrs {
		i.addrs = append(i.addrs, netip.MustParsePrefix(a))
	}
	return i
}

const routeTable = `Iface	Destination	Gateway 	Flags	RefCnt	Use	Metric	Mask		MTU	Window	IRTT
eth1	0002000A	00000000	0001	0	0	0	00FFFFFF	0	0	0
eth0	00000000	010200C0	0003	0	0	0	00000000	0	0	0
`

func TestDefaultAdvertiseAddress(t *testing.T) {
	lo := iface("lo", true, "127.0.0.1/8", "::1/128")
	eth1 := iface("eth1", true, "10.0.2.15/24")
	eth0 := iface("eth0", true, "fe80::1/64", "192.0.2.2/24")
	for _, tc := range []struct {
		name, bind, flag string
		h                host
		want             string
	}{
		{"the flag", "0.0.0.0", "198.51.100.1", fakeHost(routeTable, lo, eth1, eth0), "198.51.100.1"},
		{"the bind address", "10.0.2.15", "", fakeHost(routeTable, lo, eth1, eth0), "10.0.2.15"},
		{"the default route's interface", "0.0.0.0", "", fakeHost(routeTable, lo, eth1, eth0), "192.0.2.2"},
		{"past a loopback bind address", "127.0.0.1", "", fakeHost(routeTable, lo, eth1, eth0), "192.0.2.2"},
		{"the first up interface without a default route", "0.0.0.0", "", fakeHost("Iface\tDestination\n", lo, iface("down", false, "10.9.9.9/8"), eth1), "10.0.2.15"},
		{"none but loopback", "0.0.0.0", "", fakeHost(routeTable, lo),
			"--advertise-address: this host has no IPv4 address other than loopback, which pods cannot reach; give one they can"},
	} {
		o := NewOptions()
		o.BindAddress, o.AdvertiseAddress = tc.bind, tc.flag
		a, err := o.advertiseAddress(tc.h)
		got := a.String()
		if err != nil {
			got = err.Error()
		}
		if got != tc.want {
			t.Errorf("%s: got %s, want %s", tc.name, got, tc.want)
		}
	}
}
