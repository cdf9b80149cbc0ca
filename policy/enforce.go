package policy

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/features"
	"github.com/cilium/ebpf/link"
)

// Hooks: the BPF LSM hooks Enforce attaches to, by the name their pins carry. All are required.
const (
	HookTaskKill          = "task_kill"           // signals from system calls
	HookPtraceAccessCheck = "ptrace_access_check" // ptrace, /proc/PID/mem, process_vm_*, pidfd_getfd, ...
	HookFileSendSigiotask = "file_send_sigiotask" // SIGIO and F_SETSIG signals
	HookBPF               = "bpf"                 // bpf(*_GET_FD_BY_ID) on this package's objects
	HookFileOpen          = "file_open"           // protected files opened for write (or read: FlagNoRead)
	HookInodeUnlink       = "inode_unlink"        // protected files and directory entries unlinked
	HookInodeRmdir        = "inode_rmdir"         // protected directories and their subdirectories removed
	HookInodeRename       = "inode_rename"        // renamed, out of or into a protected directory
	HookInodeLink         = "inode_link"          // hard links to protected files
	HookInodeSetattr      = "inode_setattr"       // truncate, chmod, chown, utimes
	HookSbUmount          = "sb_umount"           // umount of a bpf file system
	HookNetlinkSend       = "netlink_send"        // audit netlink control messages
	securityLSMFile       = "/sys/kernel/security/lsm"
	verdictDenied         = 2 // struct event's stop field: the hook refused (bpf/enforce.bpf.c)
)

var enforceHooks = []string{HookTaskKill, HookPtraceAccessCheck, HookFileSendSigiotask, HookBPF, HookFileOpen,
	HookInodeUnlink, HookInodeRmdir, HookInodeRename, HookInodeLink, HookInodeSetattr, HookSbUmount, HookNetlinkSend}

// Mode is how the processes are protected: enforce (refuse) or detect (record and stop the doer).
type Mode string

// The modes.
const (
	ModeEnforce Mode = "enforce"
	ModeDetect  Mode = "detect"
)

// ErrEnforceUnavailable is returned (wrapped, with the reason) by EnforceAvailable and Enforce when BPF LSM
// programs cannot load or would not run on this kernel: use Detect.
var ErrEnforceUnavailable = errors.New("BPF LSM programs cannot run on this kernel")

// EnforceAvailable returns nil when Enforce can work here: the kernel loads BPF LSM programs and the bpf LSM
// is active (listed in /sys/kernel/security/lsm; a kernel booted without it in lsm= loads and attaches the
// programs but never runs them). Otherwise the error wraps ErrEnforceUnavailable and says why.
func EnforceAvailable() error {
	if err := features.HaveProgramType(ebpf.LSM); err != nil {
		return fmt.Errorf("%w: loading a BPF LSM program: %w", ErrEnforceUnavailable, err)
	}
	b, err := os.ReadFile(securityLSMFile)
	if err != nil {
		return fmt.Errorf("%w: cannot tell whether the bpf LSM is active: %w", ErrEnforceUnavailable, err)
	}
	active := strings.TrimSpace(string(b))
	if !slices.Contains(strings.Split(active, ","), "bpf") {
		return fmt.Errorf("%w: the bpf LSM is not active (%s: %q; boot with lsm=...,bpf)", ErrEnforceUnavailable,
			securityLSMFile, active)
	}
	return nil
}

// ChooseMode returns ModeEnforce where EnforceAvailable says enforce mode works, else ModeDetect and the
// reason enforce mode does not.
func ChooseMode() (Mode, error) {
	if err := EnforceAvailable(); err != nil {
		return ModeDetect, err
	}
	return ModeEnforce, nil
}

// Enforce loads the BPF LSM programs and attaches them (or adopts the ones pinned by a previous instance),
// and starts reading their records. From then on the kernel refuses, with EPERM, signals, ptrace-style
// access and bpf() fds aimed at the protected processes and this package's objects by processes that are
// not protected (see the package doc, "Enforce mode"), and records each refusal (Event.Denied). Like
// Detect it protects no process: call Protect, for the daemon with os.Getpid().
//
// The pin directory has Detect's layout, with the maps shared; the programs and links are pinned as
// prog_HOOK and link_HOOK for each Hook* of enforce mode. Enforce fails with an error wrapping
// ErrEnforceUnavailable, before touching the pin directory, where EnforceAvailable does. It needs
// CAP_BPF, CAP_PERFMON, CAP_MAC_ADMIN and CAP_SYS_ADMIN (root).
func Enforce(opts Options) (*Guard, error) {
	if err := EnforceAvailable(); err != nil {
		return nil, fmt.Errorf("policy: enforce mode: %w", err)
	}
	spec, err := loadEnforce()
	if err != nil {
		return nil, fmt.Errorf("policy: load spec: %w", err)
	}
	idmap, err := setattrIdmap()
	if err != nil {
		return nil, fmt.Errorf("policy: enforce mode: %w", err)
	}
	if err := spec.Variables["setattr_idmap"].Set(idmap); err != nil {
		return nil, fmt.Errorf("policy: enforce mode: %w", err)
	}
	g, err := newGuard(opts, spec)
	if err != nil {
		return nil, err
	}
	// All programs are loaded (verified) before any is attached: a program this kernel refuses leaves
	// the pins as they were.
	coll, err := ebpf.NewCollectionWithOptions(spec, ebpf.CollectionOptions{MapReplacements: g.shared()})
	if err != nil {
		g.release()
		return nil, fmt.Errorf("policy: load enforce programs: %w", err)
	}
	for _, hook := range enforceHooks {
		g.progs[hook] = coll.DetachProgram(hook)
	}
	coll.Close()
	for _, hook := range enforceHooks {
		if err := g.attachLSM(hook); err != nil {
			g.release()
			return nil, err
		}
	}
	if err := g.start(); err != nil {
		g.release()
		return nil, err
	}
	return g, nil
}

// attachLSM makes sure a link running hook's program is pinned, as attach does for Detect's tracepoints.
func (g *Guard) attachLSM(hook string) error {
	prog := g.progs[hook]
	if prog == nil {
		return fmt.Errorf("policy: no %s program in the enforce object", hook)
	}
	progPin := filepath.Join(g.dir, "prog_"+hook)
	linkPin := filepath.Join(g.dir, "link_"+hook)
	if old, err := link.LoadPinnedLink(linkPin, nil); err == nil {
		if samePinnedProgram(old, progPin, prog) {
			g.links[hook] = old
			g.adopted[hook] = true
			return nil
		}
		defer old.Close() // released once the new link is pinned in its place
	}
	l, err := link.AttachLSM(link.LSMOptions{Program: prog})
	if err != nil {
		return fmt.Errorf("policy: attach lsm/%s: %w", hook, err)
	}
	if err := pinReplacing(l, linkPin); err != nil {
		l.Close()
		return err
	}
	g.links[hook] = l
	return pinReplacing(prog, progPin)
}

// Mode returns ModeEnforce for a Guard from Enforce, ModeDetect for one from Detect.
func (g *Guard) Mode() Mode {
	if _, ok := g.links[HookTaskKill]; ok {
		return ModeEnforce
	}
	return ModeDetect
}

// setattrIdmap reports whether this kernel's inode_setattr LSM hook takes (idmap, dentry, attr), as from
// Linux 6.9, rather than (dentry, attr): the program reads its arguments by position.
func setattrIdmap() (bool, error) {
	spec, err := btf.LoadKernelSpec()
	if err != nil {
		return false, fmt.Errorf("kernel BTF: %w", err)
	}
	var fn *btf.Func
	if err := spec.TypeByName("bpf_lsm_inode_setattr", &fn); err != nil {
		return false, fmt.Errorf("kernel BTF: %w", err)
	}
	proto, ok := fn.Type.(*btf.FuncProto)
	if !ok {
		return false, fmt.Errorf("kernel BTF: bpf_lsm_inode_setattr has type %v", fn.Type)
	}
	switch n := len(proto.Params); n {
	case 2:
		return false, nil
	case 3:
		return true, nil
	default:
		return false, fmt.Errorf("kernel BTF: bpf_lsm_inode_setattr takes %d arguments, want 2 or 3", n)
	}
}
