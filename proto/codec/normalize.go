package codec

import (
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// Normalize clears every empty sub-message held "by value" (an upstream
// struct field, which JSON always shows, so its presence means nothing).
// After it, two objects that print the same JSON are proto.Equal and encode
// to the same bytes — what change detection and immutability checks need.
// Sub-messages whose presence means something (emptyDir: {}) are kept.
func Normalize(m proto.Message) {
	normalize(m.ProtoReflect())
}

func normalize(m protoreflect.Message) {
	p := planFor(m.Descriptor())
	for i := range p.fields {
		f := &p.fields[i]
		fd := f.fd
		if fd.Kind() != protoreflect.MessageKind && fd.Kind() != protoreflect.GroupKind {
			continue
		}
		if !m.Has(fd) {
			continue
		}
		switch {
		case fd.IsList():
			l := m.Get(fd).List()
			for j := 0; j < l.Len(); j++ {
				normalize(l.Get(j).Message())
			}
		case fd.IsMap():
			if fd.MapValue().Kind() == protoreflect.MessageKind {
				m.Get(fd).Map().Range(func(_ protoreflect.MapKey, v protoreflect.Value) bool {
					normalize(v.Message())
					return true
				})
			}
		default:
			sub := m.Get(fd).Message()
			if f.special == plain {
				normalize(sub)
			}
			if (f.byValue || f.inline) && f.special == plain && proto.Size(sub.Interface()) == 0 {
				m.Clear(fd)
			}
		}
	}
}
