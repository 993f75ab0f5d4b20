package skiff

import (
	"context"

	"github.com/coredns/coredns/plugin"
	"github.com/coredns/coredns/request"
	"github.com/miekg/dns"
)

// ServeDNS implements plugin.Handler, as the kubernetes plugin's.
func (s *Skiff) ServeDNS(ctx context.Context, w dns.ResponseWriter, r *dns.Msg) (int, error) {
	state := request.Request{W: w, Req: r}
	qname := state.QName()
	zone := plugin.Zones(s.Zones).Matches(qname)
	if zone == "" {
		return plugin.NextOrFailure(s.Name(), s.Next, ctx, w, r)
	}
	zone = qname[len(qname)-len(zone):] // the query's own case
	state.Zone = zone

	var (
		records, extra []dns.RR
		truncated      bool
		err            error
	)
	switch state.QType() {
	case dns.TypeA:
		records, truncated, err = plugin.A(ctx, s, zone, state, nil, plugin.Options{})
	case dns.TypeAAAA:
		records, truncated, err = plugin.AAAA(ctx, s, zone, state, nil, plugin.Options{})
	case dns.TypeTXT:
		records, truncated, err = plugin.TXT(ctx, s, zone, state, nil, plugin.Options{})
	case dns.TypeCNAME:
		records, err = plugin.CNAME(ctx, s, zone, state, plugin.Options{})
	case dns.TypePTR:
		records, err = plugin.PTR(ctx, s, zone, state, plugin.Options{})
	case dns.TypeMX:
		records, extra, err = plugin.MX(ctx, s, zone, state, plugin.Options{})
	case dns.TypeSRV:
		records, extra, err = plugin.SRV(ctx, s, zone, state, plugin.Options{})
	case dns.TypeSOA:
		if qname == zone {
			records, err = plugin.SOA(ctx, s, zone, state, plugin.Options{})
		}
	case dns.TypeAXFR, dns.TypeIXFR:
		return dns.RcodeRefused, nil
	case dns.TypeNS:
		if state.Name() == zone {
			records, extra, err = plugin.NS(ctx, s, zone, state, plugin.Options{})
			break
		}
		fallthrough
	default:
		// An A lookup tells NODATA from NXDOMAIN for every other type.
		fake := state.NewWithQuestion(state.QName(), dns.TypeA)
		fake.Zone = state.Zone
		_, _, err = plugin.A(ctx, s, zone, fake, nil, plugin.Options{})
	}

	if s.IsNameError(err) {
		if s.Fall.Through(state.Name()) {
			return plugin.NextOrFailure(s.Name(), s.Next, ctx, w, r)
		}
		if !s.Ready() {
			// A name may only be missing because the cache is still empty:
			// SERVFAIL, which nobody caches, rather than NXDOMAIN.
			return plugin.BackendError(ctx, s, zone, dns.RcodeServerFailure, state, nil, plugin.Options{})
		}
		return plugin.BackendError(ctx, s, zone, dns.RcodeNameError, state, nil, plugin.Options{})
	}
	if err != nil {
		return dns.RcodeServerFailure, err
	}
	if len(records) == 0 {
		return plugin.BackendError(ctx, s, zone, dns.RcodeSuccess, state, nil, plugin.Options{})
	}

	m := new(dns.Msg)
	m.SetReply(r)
	m.Truncated = truncated
	m.Authoritative = true
	m.Answer = append(m.Answer, records...)
	m.Extra = append(m.Extra, extra...)
	// Success tells the server the reply is gone: a failed write is only
	// worth logging, another attempt would fail the same way.
	if err := w.WriteMsg(m); err != nil {
		return dns.RcodeSuccess, plugin.Error(s.Name(), err)
	}
	return dns.RcodeSuccess, nil
}
