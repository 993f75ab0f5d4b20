#!/usr/bin/env bash
# Regenerates the .proto sources from k8s.io/api (proto/gen) and the Go code from
# them, with the generators pinned in go.mod's tool block and Debian's protoc.
set -euo pipefail
cd "$(dirname "$0")"
(cd gen && GOWORK=off go run . -out ..)
GOGEN=$(go tool -n protoc-gen-go)
GRPCGEN=$(go tool -n protoc-gen-go-grpc)
files=$(find api apipb -name '*.proto' | sort)
protoc -I . \
  --plugin=protoc-gen-go="$GOGEN" --go_out=. --go_opt=module=skiff.dev/proto \
  --plugin=protoc-gen-go-grpc="$GRPCGEN" --go-grpc_out=. --go-grpc_opt=module=skiff.dev/proto \
  $files
