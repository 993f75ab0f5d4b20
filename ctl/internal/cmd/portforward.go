package cmd

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"

	"github.com/spf13/cobra"

	"skiff.dev/client"
	corev1 "skiff.dev/proto/api/core/v1"
)

func newPortForward(o *Options) *cobra.Command {
	var addresses []string
	c := &cobra.Command{
		Use:   "port-forward TYPE/NAME [options] [LOCAL_PORT:]REMOTE_PORT [...[LOCAL_PORT_N:]REMOTE_PORT_N]",
		Short: "Forward one or more local ports to a pod",
		Args:  cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.portForward(cmd.Context(), args[0], args[1:], addresses)
		},
	}
	c.Flags().StringSliceVar(&addresses, "address", []string{"localhost"}, "Addresses to listen on (comma separated). Only accepts IP addresses or localhost as a value. When localhost is supplied, skiffctl will try to bind on both 127.0.0.1 and ::1 and will fail if neither of these addresses are available to bind.")
	return c
}

// forwardedPort is one LOCAL:REMOTE pair; local 0 picks a free port.
type forwardedPort struct {
	local  int
	remote string // a number or a container port's name
}

func parsePortPairs(specs []string) ([]forwardedPort, error) {
	out := make([]forwardedPort, 0, len(specs))
	for _, s := range specs {
		local, remote, pair := strings.Cut(s, ":")
		if !pair {
			remote = local
		}
		if remote == "" {
			return nil, fmt.Errorf("remote port cannot be empty")
		}
		fp := forwardedPort{remote: remote}
		switch {
		case pair && local == "":
			fp.local = 0
		default:
			n, err := strconv.ParseUint(local, 10, 16)
			if err != nil {
				if !pair {
					// A named remote port listens on its own number, resolved later.
					fp.local = -1
					break
				}
				return nil, fmt.Errorf("error parsing local port '%s': %v", local, err)
			}
			fp.local = int(n)
		}
		out = append(out, fp)
	}
	return out, nil
}

// remotePort resolves a port name against the pod's container ports, as
// kubectl's util.LookupContainerPortNumberByName.
func remotePort(pod *corev1.Pod, remote string) (int32, error) {
	if n, err := strconv.ParseUint(remote, 10, 16); err == nil {
		if n == 0 {
			return 0, fmt.Errorf("remote port must be > 0")
		}
		return int32(n), nil
	}
	for _, c := range pod.GetSpec().GetContainers() {
		for _, p := range c.GetPorts() {
			if p.GetName() == remote {
				return p.GetContainerPort(), nil
			}
		}
	}
	return 0, fmt.Errorf("Pod '%s' does not have a named port '%s'", pod.GetMetadata().GetName(), remote)
}

func listenAddresses(addresses []string) ([]string, error) {
	var out []string
	for _, a := range addresses {
		if a == "localhost" {
			out = append(out, "127.0.0.1", "::1")
			continue
		}
		if net.ParseIP(a) == nil {
			return nil, fmt.Errorf("%s is not a valid IP", a)
		}
		out = append(out, a)
	}
	return out, nil
}

func (o *Options) portForward(ctx context.Context, arg string, specs []string, addresses []string) error {
	name, err := podName(arg)
	if err != nil {
		return err
	}
	pairs, err := parsePortPairs(specs)
	if err != nil {
		return err
	}
	addrs, err := listenAddresses(addresses)
	if err != nil {
		return err
	}
	c, err := o.client(ctx)
	if err != nil {
		return o.printError(err)
	}
	ns := o.namespace()
	pod, err := client.For[*corev1.Pod](c, ns).Get(ctx, name)
	if err != nil {
		return o.printError(err)
	}
	if p := pod.GetStatus().GetPhase(); p != "Running" {
		return fmt.Errorf("unable to forward port because pod is not running. Current status=%s", p)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var listeners []net.Listener
	defer func() {
		for _, l := range listeners {
			l.Close()
		}
	}()
	var mu sync.Mutex // the output is shared by every connection
	printf := func(format string, a ...any) {
		mu.Lock()
		defer mu.Unlock()
		fmt.Fprintf(o.streams.Out, format, a...)
	}
	for _, fp := range pairs {
		remote, err := remotePort(pod, fp.remote)
		if err != nil {
			return err
		}
		local := fp.local
		if local < 0 {
			local = int(remote)
		}
		bound := 0
		for _, a := range addrs {
			l, err := net.Listen("tcp", net.JoinHostPort(a, strconv.Itoa(local)))
			if err != nil {
				// localhost binds either family; an explicit address must bind.
				if len(addresses) == 1 && addresses[0] == "localhost" {
					continue
				}
				return fmt.Errorf("unable to listen on port %d: %v", local, err)
			}
			if local == 0 {
				local = l.Addr().(*net.TCPAddr).Port
			}
			listeners = append(listeners, l)
			bound++
			printf("Forwarding from %s -> %d\n", net.JoinHostPort(a, strconv.Itoa(local)), remote)
			go o.acceptForwards(ctx, c, l, ns, name, local, remote, printf)
		}
		if bound == 0 {
			return fmt.Errorf("unable to listen on any of the requested ports: [%d]", local)
		}
	}
	<-ctx.Done()
	return nil
}

// acceptForwards serves one listener: a gRPC stream per connection.
func (o *Options) acceptForwards(ctx context.Context, c *client.Client, l net.Listener, ns, name string, local int, remote int32, printf func(string, ...any)) {
	for {
		conn, err := l.Accept()
		if err != nil {
			return
		}
		printf("Handling connection for %d\n", local)
		go func() {
			defer conn.Close()
			if err := c.PortForward(ctx, ns, name, remote, conn); err != nil && !errors.Is(err, net.ErrClosed) && ctx.Err() == nil {
				fmt.Fprintf(o.streams.Err, "error: an error occurred forwarding %d -> %d: %v\n", local, remote, err)
			}
		}()
	}
}
