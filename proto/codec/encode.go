// Package codec reads and writes Skiff's objects as upstream's JSON: the bytes
// `kubectl get -o json` prints and `kubectl apply` sends for the same object.
//
// protojson cannot do this: it quotes 64-bit integers, writes every set field
// and knows nothing of Quantity, IntOrString or embedded structs. This codec
// walks the message descriptors and follows the JSON options the generator
// recorded from the k8s.io/api struct tags (see proto/api/options.proto), so
// the JSON of a kind follows Go's encoding/json over upstream's struct.
package codec

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math"
	"sort"
	"strconv"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"skiff.dev/proto/scheme"
)

// MarshalJSON writes obj as upstream's JSON, apiVersion and kind first.
func MarshalJSON(obj proto.Message) ([]byte, error) {
	var b bytes.Buffer
	if err := encodeTop(&b, obj.ProtoReflect()); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// MarshalJSONIndent is MarshalJSON, indented as kubectl's -o json.
func MarshalJSONIndent(obj proto.Message) ([]byte, error) {
	raw, err := MarshalJSON(obj)
	if err != nil {
		return nil, err
	}
	var out bytes.Buffer
	if err := json.Indent(&out, raw, "", "    "); err != nil {
		return nil, err
	}
	out.WriteByte('\n')
	return out.Bytes(), nil
}

// MarshalFields writes a message's fields with no apiVersion and kind: for
// parts of objects (a PodSpec, a Status).
func MarshalFields(m proto.Message) ([]byte, error) {
	var b bytes.Buffer
	if err := encodeMessage(&b, m.ProtoReflect(), true, true); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

func encodeTop(b *bytes.Buffer, m protoreflect.Message) error {
	b.WriteByte('{')
	apiVersion, kind := scheme.TypeMetaOf(m.Descriptor().FullName())
	if kind != "" {
		b.WriteString(`"apiVersion":`)
		writeString(b, apiVersion)
		b.WriteString(`,"kind":`)
		writeString(b, kind)
	}
	first := kind == ""
	if err := encodeFields(b, m, &first); err != nil {
		return err
	}
	b.WriteByte('}')
	return nil
}

// encodeMessage writes m as a JSON object; braces is false for inlined messages.
func encodeMessage(b *bytes.Buffer, m protoreflect.Message, braces, first bool) error {
	if braces {
		b.WriteByte('{')
	}
	if err := encodeFields(b, m, &first); err != nil {
		return err
	}
	if braces {
		b.WriteByte('}')
	}
	return nil
}

func encodeFields(b *bytes.Buffer, m protoreflect.Message, first *bool) error {
	p := planFor(m.Descriptor())
	for i := range p.fields {
		f := &p.fields[i]
		fd := f.fd
		if f.inline {
			if m.Has(fd) {
				if err := encodeFields(b, m.Get(fd).Message(), first); err != nil {
					return err
				}
			}
			continue
		}
		// Which unset fields encoding/json would still write: those without
		// omitempty, and structs held by value.
		has := m.Has(fd)
		null := false
		if !has {
			switch {
			case fd.Kind() == protoreflect.MessageKind && !fd.IsList() && !fd.IsMap() && f.byValue:
				if f.special != plain && !f.emitEmpty {
					continue
				}
			case !f.emitEmpty:
				continue
			case f.optional || (fd.Kind() == protoreflect.MessageKind && !fd.IsList() && !fd.IsMap()):
				null = true // a nil pointer
			}
		}
		if !*first {
			b.WriteByte(',')
		}
		*first = false
		writeString(b, f.name)
		b.WriteByte(':')
		if null {
			b.WriteString("null")
			continue
		}
		var err error
		switch {
		case fd.IsList():
			err = encodeList(b, f, m.Get(fd).List(), has)
		case fd.IsMap():
			err = encodeMap(b, f, m.Get(fd).Map(), has)
		default:
			err = encodeValue(b, f.fd, f.special, m.Get(fd), has)
		}
		if err != nil {
			return fmt.Errorf("%s: %w", f.name, err)
		}
	}
	return nil
}

func encodeList(b *bytes.Buffer, f *field, l protoreflect.List, has bool) error {
	if !has {
		b.WriteString("null")
		return nil
	}
	b.WriteByte('[')
	for i := 0; i < l.Len(); i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		if err := encodeValue(b, f.fd, f.special, l.Get(i), true); err != nil {
			return err
		}
	}
	b.WriteByte(']')
	return nil
}

func encodeMap(b *bytes.Buffer, f *field, mp protoreflect.Map, has bool) error {
	if !has {
		b.WriteString("null")
		return nil
	}
	keys := make([]string, 0, mp.Len())
	mp.Range(func(k protoreflect.MapKey, _ protoreflect.Value) bool {
		keys = append(keys, k.String())
		return true
	})
	sort.Strings(keys)
	vd := f.fd.MapValue()
	sp := plain
	if vd.Kind() == protoreflect.MessageKind {
		sp = specials[vd.Message().FullName()]
	}
	b.WriteByte('{')
	for i, k := range keys {
		if i > 0 {
			b.WriteByte(',')
		}
		writeString(b, k)
		b.WriteByte(':')
		if err := encodeValue(b, vd, sp, mp.Get(protoreflect.ValueOfString(k).MapKey()), true); err != nil {
			return err
		}
	}
	b.WriteByte('}')
	return nil
}

func encodeValue(b *bytes.Buffer, fd protoreflect.FieldDescriptor, sp special, v protoreflect.Value, has bool) error {
	switch fd.Kind() {
	case protoreflect.StringKind:
		writeString(b, v.String())
	case protoreflect.BoolKind:
		b.WriteString(strconv.FormatBool(v.Bool()))
	case protoreflect.Int32Kind, protoreflect.Int64Kind, protoreflect.Sint32Kind, protoreflect.Sint64Kind,
		protoreflect.Sfixed32Kind, protoreflect.Sfixed64Kind:
		b.WriteString(strconv.FormatInt(v.Int(), 10))
	case protoreflect.Uint32Kind, protoreflect.Uint64Kind, protoreflect.Fixed32Kind, protoreflect.Fixed64Kind:
		b.WriteString(strconv.FormatUint(v.Uint(), 10))
	case protoreflect.DoubleKind, protoreflect.FloatKind:
		f := v.Float()
		if math.IsNaN(f) || math.IsInf(f, 0) {
			return fmt.Errorf("unsupported value %v", f)
		}
		raw, _ := json.Marshal(f)
		b.Write(raw)
	case protoreflect.BytesKind:
		b.WriteByte('"')
		b.WriteString(base64.StdEncoding.EncodeToString(v.Bytes()))
		b.WriteByte('"')
	case protoreflect.MessageKind:
		if sp != plain {
			return encodeSpecial(b, sp, v.Message(), has)
		}
		return encodeMessage(b, v.Message(), true, true)
	default:
		return fmt.Errorf("unsupported field kind %v", fd.Kind())
	}
	return nil
}

func encodeSpecial(b *bytes.Buffer, sp special, m protoreflect.Message, has bool) error {
	fields := m.Descriptor().Fields()
	switch sp {
	case quantity:
		s := m.Get(fields.ByName("string")).String()
		if s == "" {
			s = "0"
		}
		writeString(b, s)
	case intOrString:
		if m.Get(fields.ByName("type")).Int() == 1 {
			writeString(b, m.Get(fields.ByName("strVal")).String())
		} else {
			b.WriteString(strconv.FormatInt(m.Get(fields.ByName("intVal")).Int(), 10))
		}
	case timeSec, timeMicro:
		if !has {
			b.WriteString("null")
			return nil
		}
		t := time.Unix(m.Get(fields.ByName("seconds")).Int(), m.Get(fields.ByName("nanos")).Int()).UTC()
		if sp == timeSec {
			writeString(b, t.Format(time.RFC3339))
		} else {
			writeString(b, t.Format("2006-01-02T15:04:05.000000Z07:00"))
		}
	case duration:
		writeString(b, time.Duration(m.Get(fields.ByName("duration")).Int()).String())
	case rawJSON:
		raw := m.Get(fields.Get(0)).Bytes()
		if len(raw) == 0 {
			b.WriteString("null")
			return nil
		}
		if !json.Valid(raw) {
			return fmt.Errorf("embedded object is not JSON")
		}
		var c bytes.Buffer
		if err := json.Compact(&c, raw); err != nil {
			return err
		}
		b.Write(c.Bytes())
	}
	return nil
}

func writeString(b *bytes.Buffer, s string) {
	// encoding/json's escaping, so the bytes match upstream's.
	raw, _ := json.Marshal(s)
	b.Write(raw)
}
