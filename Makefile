# auditarch: make build | test | bench | lint | run
GO      ?= go
BIN     := bin/auditarch
ARCHIVE ?= var/archive
KEY     ?= var/keys/host.key
STATICCHECK_VERSION := v0.6.1
GOBIN   := $(shell $(GO) env GOPATH)/bin

.PHONY: build deps test bench lint run clean generate vmlinux

build:
	$(GO) build -o $(BIN) ./cmd/auditarch
	$(GO) build -o bin/auditarch-confine ./cmd/auditarch-confine

deps:
	scripts/deps.sh

# The BPF objects of package policy and their Go bindings (bpf2go, pinned in policy/gen.go) are committed,
# so a build needs no clang; this regenerates them (clang, llvm-strip and libbpf-dev: make deps), and
# TestGeneratedUpToDate checks in the test run that they are current. vmlinux refreshes the committed
# policy/bpf/vmlinux.h from the running kernel's BTF, a deliberate step: the objects depend on it.
generate:
	cd policy && $(GO) generate ./...

vmlinux:
	bpftool btf dump file /sys/kernel/btf/vmlinux format c > policy/bpf/vmlinux.h

# The whole suite. Privileged tests run here as root on the real kernel; with
# AUDITARCH_REQUIRE_PRIVILEGED=1 (.ci/run) a missing privilege or peer fails instead of skipping.
# Packages that program the kernel serialise on a machine-wide lock.
test: deps lint
	$(GO) test -count=1 -timeout 20m ./...

# Measurements, each printed with its target and PASS/FAIL: decode/reassembly microbenchmarks; archive
# append throughput (fsync per batch) and verify throughput on one core over 1M leaves; a store's start
# on an area of 1M leaves from its saved state; search over a
# 90-day, 10-million-event archive (generated once into bench-out/search10m); then the audited workload
# rate, consumer CPU and disk bytes per event for no audit, a bare netlink reader, auditd and auditarch;
# shipping: syscall-to-durable-on-the-store latency (p50/p99 at 1k and 10k events/s) for auditarch → its
# store and auditd + audisp-remote → a second auditd, and catch-up after a 5-minute outage; detect-mode
# protection: overhead on open, kill(self, 0) and exec loops, and attack-to-stopped/-frozen latency;
# alert classification per CPU-second with the built-in rules and 150 Sigma rules (target 100k events/s).
bench: deps build
	$(GO) test -run '^$$' -bench . -benchmem ./audit/ ./archive/...
	$(GO) test -run '^$$' -bench CatchUp -benchtime 1x ./forward/
	$(GO) test -run '^$$' -bench StoreStart -benchtime 1x ./store/
	$(GO) test -run '^$$' -bench Classify -benchmem ./alert/
	$(GO) run ./bench/cmd/searchbench -out bench-out -auditarch $(BIN)
	$(GO) run ./bench/cmd/sidebyside -out bench-out
	$(GO) run ./bench/cmd/shipbench -out bench-out
	$(GO) run ./bench/cmd/protectbench

lint:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "gofmt needed"; exit 1; }
	$(GO) vet ./...
	@test -x $(GOBIN)/staticcheck || (cd / && $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION))
	$(GOBIN)/staticcheck ./...
	scripts/boundaries.sh

# The main job on the built-in defaults: capture into ./var/archive in the foreground (root needed), signed
# with the host identity key ./var/keys/host.key (created on the first run). Ctrl-C stops it and restores
# the kernel's audit rules; then: bin/auditarch verify --key var/keys/host.pub var/archive
run: build
	$(BIN) run --archive $(ARCHIVE) --key $(KEY) --segment-duration 1h

clean:
	rm -rf bin bench-out
