# Skiff's build. `make run` starts a local cluster, `make test` is what CI runs.
SHELL := /bin/bash
GO ?= go
BIN := $(CURDIR)/bin
RUN_DIR ?= $(CURDIR)/.run

# One line per binary: name=package. Later components add theirs here.
BINARIES := \
	skiff-apiserver=./apiserver/cmd/skiff-apiserver \
	skiffctl=./ctl/cmd/skiffctl \
	skiff-scheduler=./scheduler/cmd/skiff-scheduler \
	skiff-controller-manager=./controller-manager/cmd/skiff-controller-manager \
	skiff-kubelet=./kubelet/cmd/skiff-kubelet \
	skiff-hollow-nodes=./kubelet/cmd/skiff-hollow-nodes \
	skiff-proxy=./proxy/cmd/skiff-proxy \
	skiff-dns=./dns/cmd/skiff-dns \
	skiff-local-path=./csi/cmd/skiff-local-path \
	skiff-local=./e2e/cmd/skiff-local

UNIT_PKGS := ./proto/... ./client/... ./apiserver/... ./ctl/... ./scheduler/... ./controller-manager/... \
	./kubelet/... ./images/... ./proxy/... ./dns/... ./csi/...
# The packages where goroutines share state: every CI run tests them with
# the race detector.
RACE_PKGS := ./apiserver/internal/watchcache/ ./apiserver/internal/storage/ \
	./apiserver/internal/registry/ ./apiserver/internal/server/ \
	./client/informer/ ./client/informers/ ./client/record/ ./client/controller/ \
	./client/fake/ ./client/workqueue/ ./client/leaderelection/ \
	./scheduler/internal/queue/ ./scheduler/internal/cache/ \
	./controller-manager/internal/... ./kubelet/internal/... ./kubelet/hollow/ \
	./proxy/app/ ./proxy/internal/... ./dns/plugin/skiff/
FUZZTIME ?= 30s

.PHONY: all build test unit race fuzz e2e test-race run bench proto lint clean deps

all: build

build:
	@mkdir -p $(BIN)
	@for b in $(BINARIES); do \
		name=$${b%%=*}; pkg=$${b#*=}; \
		echo "go build $$name"; \
		$(GO) build -trimpath -o $(BIN)/$$name $$pkg || exit 1; \
	done

# Lint, unit and integration tests of every module, the race detector over
# the concurrent packages, a bounded fuzzing run of the API, then the
# end-to-end suite that drives the built binaries.
test: build lint unit race fuzz e2e

unit:
	$(GO) vet $(UNIT_PKGS) ./e2e/...
	$(GO) test -count=1 -timeout 15m $(UNIT_PKGS)

e2e: build images
	$(GO) test -count=1 -timeout 20m ./e2e/...

race:
	$(GO) test -race -count=1 -timeout 15m $(RACE_PKGS)

# Every RPC with mutated requests against an in-process apiserver; the seed
# corpus alone also runs in `unit`.
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzAPI$$' -fuzztime $(FUZZTIME) -parallel 1 ./apiserver/test/fuzz/

test-race:
	$(GO) test -race -count=1 -timeout 30m $(UNIT_PKGS)

deps:
	@bash hack/install-deps.sh

run: deps build images
	$(BIN)/skiff-local up --dir $(RUN_DIR)

# Benchmarks print their figures (ratios to raw etcd measured in the same run).
bench:
	$(GO) test -run '^$$' -bench . -benchtime 1x -timeout 30m ./apiserver/test/bench/ ./apiserver/internal/watchcache/ ./e2e/scheduler/bench/ ./e2e/controllermanager/bench/ ./e2e/nodes/ ./e2e/hollow/ ./e2e/proxy/

# The images nodes run (no public registry is reachable): OCI image tarballs
# for the kubelet's --image-preload-dir. skiff-images builds its Go binaries
# itself and rewrites a tarball only when its image changed.
IMAGES_DIR ?= $(BIN)/images
.PHONY: images
images:
	$(GO) run ./images/cmd/skiff-images --out $(IMAGES_DIR)

proto:
	bash proto/gen.sh

lint:
	@out=$$(gofmt -l proto client apiserver ctl e2e scheduler controller-manager kubelet images proxy dns); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet $(UNIT_PKGS) ./e2e/...
	cd e2e && $(GO) tool staticcheck ../proto/... ../client/... ../apiserver/... ../ctl/... ../scheduler/... ../controller-manager/... ../kubelet/... ../images/... ../proxy/... ../dns/... ../csi/... ./...

clean:
	rm -rf $(BIN) $(RUN_DIR)
