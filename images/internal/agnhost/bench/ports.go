package bench

import (
	"fmt"
	"os"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// portRange is the source ports one target's sockets take.
//
// One client talks to the same backend both straight and through the
// ClusterIP, from one address. Were both to draw on the same ports, a
// socket of one kind would now and then take a 4-tuple still held for the
// other kind. Over TCP the backend has the other kind's connection in
// TIME_WAIT under it, with another timestamp offset (Linux derives one per
// address pair, and the client's pair names the ClusterIP), and answers
// the SYN with a stale ACK: a SYN retried a second later. Over UDP the
// client node's conntrack has the other kind's flow, whose reply tuple the
// new one's would be, fails to insert the new one and drops the query.
// Measured with one shared range: a max of 2 s on both HTTP paths with a
// connection per request and their rates halved, and 1 DNS query in 1,700
// lost (insert_failed) and its worker stalled for the 2 s timeout, 4×
// fewer queries/s. A real client uses one or the other, so each target
// gets its own half of the ephemeral range, as it would the whole alone.
type portRange struct{ lo, hi int }

// halves splits this network namespace's ephemeral port range.
func halves() (direct, service portRange, err error) {
	const path = "/proc/sys/net/ipv4/ip_local_port_range"
	data, err := os.ReadFile(path)
	if err != nil {
		return direct, service, err
	}
	var lo, hi int
	if _, err := fmt.Sscan(strings.TrimSpace(string(data)), &lo, &hi); err != nil {
		return direct, service, fmt.Errorf("%s: %q: %w", path, data, err)
	}
	if hi-lo < 2 {
		return direct, service, fmt.Errorf("%s is %d-%d: too few ports to split between two targets", path, lo, hi)
	}
	mid := lo + (hi-lo)/2
	return portRange{lo, mid}, portRange{mid + 1, hi}, nil
}

// control is a net.Dialer's Control: the socket picks its source port
// within r (IP_LOCAL_PORT_RANGE, Linux 6.3 and later), for TCP and UDP.
func (r portRange) control(_, _ string, c syscall.RawConn) error {
	var serr error
	if err := c.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_LOCAL_PORT_RANGE, r.lo|r.hi<<16)
	}); err != nil {
		return err
	}
	if serr != nil {
		return fmt.Errorf("IP_LOCAL_PORT_RANGE %d-%d (Linux 6.3 or later): %w", r.lo, r.hi, serr)
	}
	return nil
}

func (r portRange) contains(port int) bool { return r.lo <= port && port <= r.hi }
