package skiff

import (
	"context"
	"log/slog"
	"strconv"
	"strings"

	clog "github.com/coredns/coredns/plugin/pkg/log"
)

// slogHandler writes the informers' slog records through CoreDNS's plugin
// logger, so they read "[WARNING] plugin/skiff: …" like every other line
// of the server (and follow -log-format json).
type slogHandler struct {
	p      clog.P
	prefix string // "k=v " of WithAttrs, rendered once
	group  string
}

func newSlogger(p clog.P) *slog.Logger { return slog.New(slogHandler{p: p}) }

func (h slogHandler) Enabled(_ context.Context, l slog.Level) bool {
	return l >= slog.LevelInfo || clog.D.Value()
}

func (h slogHandler) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	b.WriteString(r.Message)
	if h.prefix != "" {
		b.WriteByte(' ')
		b.WriteString(strings.TrimSuffix(h.prefix, " "))
	}
	r.Attrs(func(a slog.Attr) bool {
		b.WriteByte(' ')
		writeAttr(&b, h.group, a)
		return true
	})
	switch line := b.String(); {
	case r.Level >= slog.LevelError:
		h.p.Error(line)
	case r.Level >= slog.LevelWarn:
		h.p.Warning(line)
	case r.Level >= slog.LevelInfo:
		h.p.Info(line)
	default:
		h.p.Debug(line)
	}
	return nil
}

func (h slogHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	var b strings.Builder
	b.WriteString(h.prefix)
	for _, a := range attrs {
		writeAttr(&b, h.group, a)
		b.WriteByte(' ')
	}
	h.prefix = b.String()
	return h
}

func (h slogHandler) WithGroup(name string) slog.Handler {
	if name != "" {
		h.group += name + "."
	}
	return h
}

func writeAttr(b *strings.Builder, group string, a slog.Attr) {
	b.WriteString(group)
	b.WriteString(a.Key)
	b.WriteByte('=')
	v := a.Value.Resolve().String()
	if v == "" || strings.ContainsAny(v, " \t\n\"=") {
		v = strconv.Quote(v)
	}
	b.WriteString(v)
}
