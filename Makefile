# auditarch: make build | test | bench | lint | run | deb
GO      ?= go
BIN     := bin/auditarch
ARCHIVE ?= var/archive
KEY     ?= var/keys/host.key
STATICCHECK_VERSION := v0.6.1
GOBIN   := $(shell $(GO) env GOPATH)/bin

.PHONY: build deps test bench lint run clean reset generate vmlinux deb

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
# SIEM sinks: events/s through the file, RFC 5424 over TLS and RELP sinks to a private rsyslogd on loopback
# (targets 200k/s, 80k/s, 50k/s) and the ECS rendering alone;
# shipping: syscall-to-durable-on-the-store latency (p50/p99 at 1k and 10k events/s) for auditarch → its
# store and auditd + audisp-remote → a second auditd, and catch-up after a 5-minute outage; detect-mode
# protection: overhead on open, kill(self, 0) and exec loops, and attack-to-stopped/-frozen latency;
# alert classification per CPU-second with the built-in rules and 150 Sigma rules (target 100k events/s).
bench: deps build
	$(GO) test -run '^$$' -bench . -benchmem ./audit/ ./archive/...
	$(GO) test -run '^$$' -bench CatchUp -benchtime 1x ./forward/
	$(GO) test -run '^$$' -bench 'Sink|RenderECS' -benchtime 20000x ./forward/
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

# The Debian package (docs/install.md): static binaries, the units, the documented configuration, the
# built-in rules as /etc/audit/rules.d/auditarch.rules (auditarch rules), the man page generated from
# the usage text; built by nfpm, pinned. DEB_VERSION: the version in the START leaves, ~git.<commits>.
NFPM_VERSION := v2.48.0
DEB_VERSION  ?= $(shell sed -n 's/^const version = "auditarch \(.*\)"/\1/p' cmd/auditarch/run.go | tr - '~').git$(shell git rev-list --count HEAD 2>/dev/null || echo 0)-1
DEB_BUILD    ?= build/deb
DEB_OUT      ?= bin
DEB_DATE     ?= $(shell git log -1 --format=%cs 2>/dev/null || date -u +%F)
deb:
	rm -rf $(DEB_BUILD) $(DEB_OUT)/auditarch_*.deb && mkdir -p $(DEB_BUILD) $(DEB_OUT)
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '-s -w' -o $(DEB_BUILD)/auditarch ./cmd/auditarch
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '-s -w' -o $(DEB_BUILD)/auditarch-confine ./cmd/auditarch-confine
	$(DEB_BUILD)/auditarch rules > $(DEB_BUILD)/auditarch.rules
	$(DEB_BUILD)/auditarch --help | $(GO) run ./packaging/cmd/mkman -date $(DEB_DATE) -version $(DEB_VERSION) | gzip -9n > $(DEB_BUILD)/auditarch.8.gz
	printf 'auditarch ($(DEB_VERSION)) unstable; urgency=medium\n\n  * Built from git $(shell git rev-parse --short HEAD 2>/dev/null).\n\n -- auditarch maintainers <auditarch@localhost>  %s\n' \
		"$$(date -R -u -d $(DEB_DATE))" | gzip -9n > $(DEB_BUILD)/changelog.Debian.gz
	sed 's|@DEB_BUILD@|$(DEB_BUILD)|g' packaging/nfpm.yaml > $(DEB_BUILD)/nfpm.yaml
	DEB_VERSION=$(DEB_VERSION) $(GO) run github.com/goreleaser/nfpm/v2/cmd/nfpm@$(NFPM_VERSION) package \
		-f $(DEB_BUILD)/nfpm.yaml -p deb -t $(DEB_OUT)/auditarch_$(DEB_VERSION)_amd64.deb

clean:
	rm -rf bin bench-out build

# Resets the demo of make run: the archive, its keys and the embedded store. The store's sealed segments
# are immutable (chattr +i), which rm -rf alone cannot remove (root needed, as for make run).
reset:
	chattr -R -i $(dir $(ARCHIVE)) 2>/dev/null || true
	rm -rf $(dir $(ARCHIVE))
