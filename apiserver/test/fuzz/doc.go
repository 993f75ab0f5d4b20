// Package fuzz drives every RPC of the apiserver's gRPC API with mutated
// requests against a real in-process apiserver on an embedded etcd, and
// fails when the server dies, stops answering, or answers Internal or
// Unknown (a recovered panic or an error nobody mapped to an API status).
//
// The seed corpus runs with the unit tests; fuzzing is opt-in:
//
//	go test -run '^$' -fuzz '^FuzzAPI$' -fuzztime 30s -parallel 1 ./apiserver/test/fuzz/
//
// An input is one request: its first byte picks the RPC, the rest is the
// request message in protobuf binary. Failing inputs the fuzzer finds land in
// testdata/fuzz/FuzzAPI/ and run as regular tests from then on.
package fuzz
