package policy

// The BPF object and its Go bindings are generated and committed (make generate); regenerating needs clang
// and the libbpf headers (scripts/deps.sh installs both). bpf/vmlinux.h is dumped from a kernel's BTF by
// bpftool and committed too, so the object does not depend on the machine that builds it (make vmlinux).
//go:generate go run github.com/cilium/ebpf/cmd/bpf2go@v0.22.0 -target amd64 -type event detect bpf/detect.bpf.c -- -I./bpf -O2 -g -Wall -Werror
//go:generate go run github.com/cilium/ebpf/cmd/bpf2go@v0.22.0 -target amd64 -type event enforce bpf/enforce.bpf.c -- -I./bpf -O2 -g -Wall -Werror
