package codec

import (
	"sync"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"skiff.dev/proto/api"
)

// special names the upstream types whose JSON form is not an object.
type special int

const (
	plain special = iota
	quantity
	intOrString
	timeSec
	timeMicro
	duration
	rawJSON
)

var specials = map[protoreflect.FullName]special{
	"skiff.api.meta.v1.Quantity":     quantity,
	"skiff.api.meta.v1.IntOrString":  intOrString,
	"skiff.api.meta.v1.Time":         timeSec,
	"skiff.api.meta.v1.MicroTime":    timeMicro,
	"skiff.api.meta.v1.Duration":     duration,
	"skiff.api.meta.v1.FieldsV1":     rawJSON,
	"skiff.api.meta.v1.RawExtension": rawJSON,
}

// field is what the codec needs to know of one field, read once per message type.
type field struct {
	fd        protoreflect.FieldDescriptor
	name      string // upstream's JSON name
	emitEmpty bool   // no omitempty upstream
	inline    bool   // embedded struct: fields written into the parent
	byValue   bool   // struct held by value: written even when unset
	special   special
	optional  bool // proto3 optional scalar (an upstream pointer)
}

type plan struct {
	fields []field
	// byName finds a field by JSON name, looking through inlined messages:
	// the path is the chain of fields from this message to the named one.
	byName map[string][]*field
}

var plans sync.Map // protoreflect.FullName → *plan

func planFor(md protoreflect.MessageDescriptor) *plan {
	if p, ok := plans.Load(md.FullName()); ok {
		return p.(*plan)
	}
	p := &plan{byName: map[string][]*field{}}
	fds := md.Fields()
	for i := 0; i < fds.Len(); i++ {
		fd := fds.Get(i)
		f := field{fd: fd, name: fd.JSONName(), optional: fd.HasOptionalKeyword()}
		if opts := fd.Options(); opts != nil {
			f.emitEmpty = proto.GetExtension(opts, api.E_EmitEmpty).(bool)
			f.inline = proto.GetExtension(opts, api.E_Inline).(bool)
			f.byValue = proto.GetExtension(opts, api.E_ByValue).(bool)
		}
		if fd.Kind() == protoreflect.MessageKind && !fd.IsMap() {
			f.special = specials[fd.Message().FullName()]
		}
		p.fields = append(p.fields, f)
	}
	for i := range p.fields {
		f := &p.fields[i]
		if f.inline && f.fd.Kind() == protoreflect.MessageKind {
			for name, path := range planFor(f.fd.Message()).byName {
				if _, taken := p.byName[name]; !taken {
					p.byName[name] = append([]*field{f}, path...)
				}
			}
			continue
		}
		p.byName[f.name] = []*field{f}
	}
	actual, _ := plans.LoadOrStore(md.FullName(), p)
	return actual.(*plan)
}
