package server

import (
	"context"
	"fmt"

	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"skiff.dev/proto/apierrors"
)

// requestCodec reads request frames as gRPC's own proto codec does, with two
// differences. Unknown fields are dropped, as upstream drops fields it does
// not know, so nothing a client invents reaches storage. And a frame that
// does not decode is a bad request, not Internal: gRPC turns any error a
// codec returns into Internal, so the codec leaves the decode error in the
// message's unknown fields, which are otherwise always empty, and the
// decodeErrors interceptors answer InvalidArgument with it.
type requestCodec struct{ encoding.CodecV2 }

// undecodable is the field number of that note: the highest protobuf allows,
// used by no message of ours.
const undecodable = protowire.MaxValidNumber

func newRequestCodec() requestCodec {
	return requestCodec{encoding.GetCodecV2("proto")}
}

func (c requestCodec) Unmarshal(data mem.BufferSlice, v any) error {
	m, ok := v.(proto.Message)
	if !ok {
		return c.CodecV2.Unmarshal(data, v)
	}
	buf := data.MaterializeToBuffer(mem.DefaultBufferPool())
	defer buf.Free()
	if err := (proto.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(buf.ReadOnlyData(), m); err != nil {
		proto.Reset(m)
		note := protowire.AppendTag(nil, undecodable, protowire.BytesType)
		note = protowire.AppendString(note, err.Error())
		m.ProtoReflect().SetUnknown(note)
	}
	return nil
}

// decodeError is the note requestCodec left in m, as the API's error.
func decodeError(v any) error {
	m, ok := v.(proto.Message)
	if !ok {
		return nil
	}
	b := m.ProtoReflect().GetUnknown()
	if len(b) == 0 {
		return nil
	}
	num, typ, n := protowire.ConsumeTag(b)
	if n < 0 || num != undecodable || typ != protowire.BytesType {
		return nil
	}
	msg, _ := protowire.ConsumeString(b[n:])
	return apierrors.NewBadRequest(fmt.Sprintf("the request could not be decoded: %s", msg))
}

func unaryDecodeErrors(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if err := decodeError(req); err != nil {
		return nil, err
	}
	return handler(ctx, req)
}

func streamDecodeErrors(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	return handler(srv, decodingStream{ss})
}

type decodingStream struct{ grpc.ServerStream }

func (s decodingStream) RecvMsg(m any) error {
	if err := s.ServerStream.RecvMsg(m); err != nil {
		return err
	}
	return decodeError(m)
}
