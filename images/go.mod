module skiff.dev/images

go 1.26.0

require (
	github.com/google/go-containerregistry v0.22.1
	github.com/miekg/dns v1.1.73
	golang.org/x/sys v0.47.0
)

require (
	github.com/klauspost/compress v1.19.2 // indirect
	github.com/opencontainers/go-digest v1.0.0 // indirect
	github.com/opencontainers/image-spec v1.1.1 // indirect
	golang.org/x/net v0.57.0 // indirect
)
