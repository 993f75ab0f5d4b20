package codec

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"k8s.io/apimachinery/pkg/api/resource"

	"skiff.dev/proto/scheme"
)

// Options tune decoding.
type Options struct {
	// Strict makes unknown fields an error (upstream's fieldValidation=Strict,
	// kubectl's default). Otherwise they are dropped, as upstream's Ignore.
	Strict bool
}

// UnknownFieldsError lists every field of the input the kind does not have.
type UnknownFieldsError struct{ Fields []string }

func (e *UnknownFieldsError) Error() string {
	quoted := make([]string, len(e.Fields))
	for i, f := range e.Fields {
		quoted[i] = fmt.Sprintf("unknown field %q", f)
	}
	return "strict decoding error: " + strings.Join(quoted, ", ")
}

// Decode reads one top-level object (a kind or a subresource body such as a
// Binding) from upstream JSON, choosing its message by apiVersion and kind.
func Decode(data []byte, opts Options) (proto.Message, error) {
	v, err := parse(data)
	if err != nil {
		return nil, err
	}
	obj, ok := v.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("an object must be a JSON object, not %s", describe(v))
	}
	apiVersion, _ := obj["apiVersion"].(string)
	kind, _ := obj["kind"].(string)
	switch {
	case kind == "":
		return nil, fmt.Errorf("Object 'Kind' is missing in '%s'", truncate(data))
	case apiVersion == "":
		return nil, fmt.Errorf("Object 'apiVersion' is missing in '%s'", truncate(data))
	}
	name, ok := scheme.MessageForTypeMeta(apiVersion, kind)
	if !ok {
		return nil, fmt.Errorf("no matches for kind %q in version %q", kind, apiVersion)
	}
	mt, err := protoregistry.GlobalTypes.FindMessageByName(name)
	if err != nil {
		return nil, fmt.Errorf("kind %q: %w", kind, err)
	}
	m := mt.New()
	d := &decoder{opts: opts}
	d.object(m, obj, "", true)
	if err := d.result(); err != nil {
		return nil, err
	}
	return m.Interface(), nil
}

// DecodeObject is Decode for stored kinds only.
func DecodeObject(data []byte, opts Options) (scheme.Object, error) {
	m, err := Decode(data, opts)
	if err != nil {
		return nil, err
	}
	o, ok := m.(scheme.Object)
	if !ok {
		return nil, fmt.Errorf("%s is not a stored kind", m.ProtoReflect().Descriptor().Name())
	}
	return o, nil
}

// DecodeInto reads upstream JSON into m, whose type the caller chose;
// apiVersion and kind, if present, are not checked.
func DecodeInto(data []byte, m proto.Message, opts Options) error {
	v, err := parse(data)
	if err != nil {
		return err
	}
	obj, ok := v.(map[string]any)
	if !ok {
		return fmt.Errorf("expected a JSON object, got %s", describe(v))
	}
	proto.Reset(m)
	d := &decoder{opts: opts}
	d.object(m.ProtoReflect(), obj, "", true)
	return d.result()
}

func parse(data []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("invalid JSON: %w", err)
	}
	if dec.More() {
		return nil, errors.New("invalid JSON: data after the top-level value")
	}
	return v, nil
}

func truncate(data []byte) string {
	const max = 200
	if len(data) > max {
		return string(data[:max]) + "…"
	}
	return string(data)
}

// decoder collects every error of an input, so a user fixes them all at once.
type decoder struct {
	opts    Options
	errs    []string
	unknown []string
}

func (d *decoder) fail(path, format string, args ...any) {
	if path == "" {
		path = "<root>"
	}
	d.errs = append(d.errs, path+": "+fmt.Sprintf(format, args...))
}

func (d *decoder) result() error {
	if len(d.errs) > 0 {
		return errors.New("error decoding " + strings.Join(d.errs, "; "))
	}
	if d.opts.Strict && len(d.unknown) > 0 {
		return &UnknownFieldsError{Fields: d.unknown}
	}
	return nil
}

func join(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}

func (d *decoder) object(m protoreflect.Message, obj map[string]any, path string, top bool) {
	p := planFor(m.Descriptor())
	keys := make([]string, 0, len(obj))
	for k := range obj {
		keys = append(keys, k)
	}
	sort.Strings(keys) // stable error order
	for _, k := range keys {
		v := obj[k]
		chain, ok := p.byName[k]
		if !ok {
			if top && (k == "apiVersion" || k == "kind") {
				continue
			}
			d.unknown = append(d.unknown, join(path, k))
			continue
		}
		if v == nil {
			continue // null leaves a field unset, as encoding/json does
		}
		target := m
		for _, f := range chain[:len(chain)-1] {
			target = target.Mutable(f.fd).Message()
		}
		d.field(target, chain[len(chain)-1], v, join(path, k))
	}
}

func (d *decoder) field(m protoreflect.Message, f *field, v any, path string) {
	fd := f.fd
	switch {
	case fd.IsList():
		arr, ok := v.([]any)
		if !ok {
			d.fail(path, "expected an array, got %s", describe(v))
			return
		}
		l := m.Mutable(fd).List()
		for i, e := range arr {
			ep := fmt.Sprintf("%s[%d]", path, i)
			if e == nil {
				d.fail(ep, "null is not allowed in a list")
				continue
			}
			if fd.Kind() == protoreflect.MessageKind {
				el := l.NewElement()
				d.message(el.Message(), f.special, e, ep)
				l.Append(el)
				continue
			}
			if val, ok := d.scalar(fd, e, ep); ok {
				l.Append(val)
			}
		}
	case fd.IsMap():
		obj, ok := v.(map[string]any)
		if !ok {
			d.fail(path, "expected an object, got %s", describe(v))
			return
		}
		mp := m.Mutable(fd).Map()
		vd := fd.MapValue()
		for k, e := range obj {
			ep := path + "[" + strconv.Quote(k) + "]"
			key := protoreflect.ValueOfString(k).MapKey()
			if vd.Kind() == protoreflect.MessageKind {
				if e == nil {
					continue
				}
				el := mp.NewValue()
				d.message(el.Message(), specials[vd.Message().FullName()], e, ep)
				mp.Set(key, el)
				continue
			}
			if e == nil {
				e = "" // upstream's maps of strings take null as the empty string
			}
			if val, ok := d.scalar(vd, e, ep); ok {
				mp.Set(key, val)
			}
		}
	case fd.Kind() == protoreflect.MessageKind:
		d.message(m.Mutable(fd).Message(), f.special, v, path)
	default:
		if val, ok := d.scalar(fd, v, path); ok {
			m.Set(fd, val)
		}
	}
}

func (d *decoder) message(m protoreflect.Message, sp special, v any, path string) {
	if sp != plain {
		d.special(m, sp, v, path)
		return
	}
	obj, ok := v.(map[string]any)
	if !ok {
		d.fail(path, "expected an object, got %s", describe(v))
		return
	}
	d.object(m, obj, path, false)
}

func (d *decoder) special(m protoreflect.Message, sp special, v any, path string) {
	fields := m.Descriptor().Fields()
	switch sp {
	case quantity:
		var s string
		switch x := v.(type) {
		case string:
			s = x
		case json.Number:
			s = x.String()
		default:
			d.fail(path, "expected a quantity (a string such as \"500m\" or \"1Gi\", or a number), got %s", describe(v))
			return
		}
		q, err := resource.ParseQuantity(s)
		if err != nil {
			d.fail(path, "%v", err)
			return
		}
		m.Set(fields.ByName("string"), protoreflect.ValueOfString(q.String()))
	case intOrString:
		switch x := v.(type) {
		case string:
			m.Set(fields.ByName("type"), protoreflect.ValueOfInt64(1))
			m.Set(fields.ByName("strVal"), protoreflect.ValueOfString(x))
		case json.Number:
			n, err := strconv.ParseInt(x.String(), 10, 32)
			if err != nil {
				d.fail(path, "expected an integer or a string, got %s", x)
				return
			}
			m.Set(fields.ByName("intVal"), protoreflect.ValueOfInt32(int32(n)))
		default:
			d.fail(path, "expected an integer or a string, got %s", describe(v))
		}
	case timeSec, timeMicro:
		s, ok := v.(string)
		if !ok {
			d.fail(path, "expected an RFC 3339 time, got %s", describe(v))
			return
		}
		if s == "" {
			return
		}
		t, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			d.fail(path, "expected an RFC 3339 time, got %q", s)
			return
		}
		nanos := int32(0)
		if sp == timeMicro {
			nanos = int32(t.Nanosecond() / 1000 * 1000)
		}
		m.Set(fields.ByName("seconds"), protoreflect.ValueOfInt64(t.Unix()))
		if nanos != 0 {
			m.Set(fields.ByName("nanos"), protoreflect.ValueOfInt32(nanos))
		}
	case duration:
		s, ok := v.(string)
		if !ok {
			d.fail(path, "expected a duration such as \"1m30s\", got %s", describe(v))
			return
		}
		dur, err := time.ParseDuration(s)
		if err != nil {
			d.fail(path, "expected a duration such as \"1m30s\", got %q", s)
			return
		}
		m.Set(fields.ByName("duration"), protoreflect.ValueOfInt64(int64(dur)))
	case rawJSON:
		raw, err := json.Marshal(v)
		if err != nil {
			d.fail(path, "%v", err)
			return
		}
		m.Set(fields.Get(0), protoreflect.ValueOfBytes(raw))
	}
}

func (d *decoder) scalar(fd protoreflect.FieldDescriptor, v any, path string) (protoreflect.Value, bool) {
	switch fd.Kind() {
	case protoreflect.StringKind:
		if s, ok := v.(string); ok {
			return protoreflect.ValueOfString(s), true
		}
		d.fail(path, "expected a string, got %s", describe(v))
	case protoreflect.BoolKind:
		if b, ok := v.(bool); ok {
			return protoreflect.ValueOfBool(b), true
		}
		d.fail(path, "expected true or false, got %s", describe(v))
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
		if n, ok := d.integer(v, path, math.MinInt32, math.MaxInt32); ok {
			return protoreflect.ValueOfInt32(int32(n)), true
		}
	case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		if n, ok := d.integer(v, path, math.MinInt64, math.MaxInt64); ok {
			return protoreflect.ValueOfInt64(n), true
		}
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
		if n, ok := d.integer(v, path, 0, math.MaxUint32); ok {
			return protoreflect.ValueOfUint32(uint32(n)), true
		}
	case protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		if n, ok := d.integer(v, path, 0, math.MaxInt64); ok {
			return protoreflect.ValueOfUint64(uint64(n)), true
		}
	case protoreflect.DoubleKind, protoreflect.FloatKind:
		if n, ok := v.(json.Number); ok {
			if f, err := n.Float64(); err == nil {
				return protoreflect.ValueOfFloat64(f), true
			}
		}
		d.fail(path, "expected a number, got %s", describe(v))
	case protoreflect.BytesKind:
		s, ok := v.(string)
		if !ok {
			d.fail(path, "expected base64-encoded data, got %s", describe(v))
			break
		}
		b, err := base64.StdEncoding.DecodeString(s)
		if err != nil {
			d.fail(path, "illegal base64 data at input byte %d", base64Offset(err))
			break
		}
		return protoreflect.ValueOfBytes(b), true
	default:
		d.fail(path, "unsupported field kind %v", fd.Kind())
	}
	return protoreflect.Value{}, false
}

func base64Offset(err error) int64 {
	var c base64.CorruptInputError
	if errors.As(err, &c) {
		return int64(c)
	}
	return 0
}

func (d *decoder) integer(v any, path string, lo, hi int64) (int64, bool) {
	n, ok := v.(json.Number)
	if !ok {
		d.fail(path, "expected an integer, got %s", describe(v))
		return 0, false
	}
	i, err := strconv.ParseInt(n.String(), 10, 64)
	if err != nil {
		// 3.0 is an integer to YAML users; 3.5 is not.
		f, ferr := n.Float64()
		if ferr != nil || f != math.Trunc(f) || f < float64(lo) || f > float64(hi) {
			d.fail(path, "expected an integer, got %s", n)
			return 0, false
		}
		i = int64(f)
	}
	if i < lo || i > hi {
		d.fail(path, "value %d is out of range [%d, %d]", i, lo, hi)
		return 0, false
	}
	return i, true
}

func describe(v any) string {
	switch x := v.(type) {
	case nil:
		return "null"
	case string:
		return "string " + strconv.Quote(truncateString(x))
	case json.Number:
		return "number " + x.String()
	case bool:
		return "boolean " + strconv.FormatBool(x)
	case []any:
		return "an array"
	case map[string]any:
		return "an object"
	}
	return fmt.Sprintf("%T", v)
}

func truncateString(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}
