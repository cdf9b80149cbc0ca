package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sys/unix"
	"kernel.org/pub/linux/libs/security/libcap/cap"

	"github.com/auditarch/auditarch/alert/mail"
	"github.com/auditarch/auditarch/forward"
	"github.com/auditarch/auditarch/policy/freeze"
	"github.com/auditarch/auditarch/policy/sandbox"
)

// Sandbox settings (config sandbox:, flag --sandbox; docs/protect.md "Self-sandbox").
const (
	SandboxOn  = "on"  // default: Landlock, seccomp and capabilities once the daemon is set up
	SandboxOff = "off" // no self-sandbox: for diagnosis, and for callers that run the daemon in-process
)

// resolverFiles are what Go's resolver reads to look up the store's host name.
var resolverFiles = []string{"/etc/resolv.conf", "/etc/hosts", "/etc/nsswitch.conf", "/etc/host.conf", "/etc/services"}

// applySandbox confines the daemon (policy/sandbox) to what it does once set up — the kernel's rules
// programmed, the archive open, the protection programs loaded and the sockets open: it writes its
// archive, the embedded store's directory, the protection pins and the cgroup tree (freezing sessions),
// reads /proc and, for a store named by host name, the resolver's files; it connects to the store's
// port only; and it keeps the capabilities the running daemon uses. It logs what it applied.
func applySandbox(cfg *Config, log zerolog.Logger) error {
	if cfg.Sandbox == SandboxOff {
		log.Warn().Msg("self-sandbox off (sandbox: off): the daemon runs with all the privileges it started with")
		return nil
	}
	abs := func(p string) (string, error) {
		a, err := filepath.Abs(p)
		if err != nil {
			return "", fmt.Errorf("sandbox: %w", err)
		}
		return a, nil
	}
	archiveDir, err := abs(cfg.Archive)
	if err != nil {
		return err
	}
	opts := sandbox.Options{
		ReadWrite: []string{archiveDir},
		ReadOnly:  []string{"/proc"},
		// Audit: re-assert the rules (guard), restore them and unregister at stop (control), mark the
		// run's stop (write). Kill: a ptrace tracer of the daemon. Immutable: the embedded store's
		// sealed segments. Resource: the filesystem's reserved blocks, as before the sandbox.
		Keep: []cap.Value{cap.AUDIT_CONTROL, cap.AUDIT_WRITE, cap.KILL, cap.SYS_RESOURCE},
	}
	if cfg.Store.Address == "" {
		dir := cfg.Store.Dir
		if dir == "" {
			dir = filepath.Join(filepath.Dir(archiveDir), "store") // as startShipping
		}
		if dir, err = abs(dir); err != nil {
			return err
		}
		opts.ReadWrite = append(opts.ReadWrite, dir)
		opts.Keep = append(opts.Keep, cap.LINUX_IMMUTABLE)
		// connect(2) stays unrestricted: the embedded store's port is chosen at startup.
	} else {
		host, port, err := net.SplitHostPort(cfg.Store.Address)
		if err != nil {
			return fmt.Errorf("sandbox: store address: %w", err)
		}
		p, err := net.LookupPort("tcp", port)
		if err != nil {
			return fmt.Errorf("sandbox: store port: %w", err)
		}
		opts.ConnectTCP = []uint16{uint16(p)}
		if net.ParseIP(host) == nil {
			opts.ConnectTCP = append(opts.ConnectTCP, 53) // DNS over TCP, for a truncated answer
			for _, f := range resolverFiles {
				if _, err := os.Stat(f); err == nil {
					opts.ReadOnly = append(opts.ReadOnly, f)
				}
			}
		}
	}
	if err := sandboxConsumers(cfg, &opts); err != nil {
		return err
	}
	if cfg.Protect.Mode != ProtectOff {
		pins, err := abs(cfg.Protect.Pins)
		if err != nil {
			return err
		}
		opts.ReadWrite = append(opts.ReadWrite, pins)
		// Freezing an attacker's session: the frozen sessions' directory is made now, while the daemon
		// may still create entries in the cgroup2 root (0555: CAP_DAC_OVERRIDE, which it drops).
		if m, err := freeze.Prepare(); err == nil {
			opts.ReadWrite = append(opts.ReadWrite, m)
		} else {
			log.Warn().Err(err).Msg("self-sandbox: no cgroup2 mount: attackers' sessions cannot be frozen")
		}
		// The attacker's executable, for the POLICY leaf: the sandbox forbids reading /proc/PID/exe.
		if err := startExeHelper(); err != nil {
			log.Warn().Err(err).Msg("self-sandbox: no exe helper: POLICY leaves will not name the attacker's executable")
		}
		// BPF: the protection programs' maps and ring buffer.
		opts.Keep = append(opts.Keep, cap.BPF, cap.PERFMON, cap.SYS_ADMIN)
	}
	rep, err := sandbox.Apply(opts)
	if err != nil {
		return err
	}
	ports := "unrestricted"
	if rep.ConnectTCP != nil {
		ports = fmt.Sprint(rep.ConnectTCP)
	}
	log.Info().Int("landlock_abi", rep.LandlockABI).Strs("read_write", rep.ReadWrite).Strs("read_only", rep.ReadOnly).
		Str("tcp_connect", ports).Bool("net_enforced", rep.NetEnforced).Int("syscalls", rep.Syscalls).
		Int("bpf_instructions", rep.Instructions).Strs("caps", rep.Caps).Str("threads", strconv.Itoa(rep.Threads)).
		Msg("self-sandbox applied")
	return nil
}

// certDirs hold the system's CA certificates, which Go reads at the first TLS handshake that needs them.
var certDirs = []string{"/etc/ssl", "/etc/pki", "/usr/share/ca-certificates", "/usr/local/share/ca-certificates"}

// sandboxConsumers adds what the archive's consumers need once the daemon is confined: the alert mail
// spool (read-write), its rule and Sigma directories, the relay's CA and password files and the system's
// CA certificates (read-only), the file sinks' directories (read-write), the sinks' TLS files, and, where
// TCP connections are restricted, the relay's and the network sinks' ports and the resolver.
func sandboxConsumers(cfg *Config, opts *sandbox.Options) error {
	var ports []uint16
	var names bool // a consumer connects to a host name
	ro := func(paths ...string) {
		for _, p := range paths {
			if p == "" {
				continue
			}
			if a, err := filepath.Abs(p); err == nil {
				if _, err := os.Stat(a); err == nil {
					opts.ReadOnly = append(opts.ReadOnly, a)
				}
			}
		}
	}
	tls := false
	if m := cfg.Alert.Mail; m.Mailhub != "" {
		spool, err := cfg.alertSpool()
		if err != nil {
			return fmt.Errorf("sandbox: %w", err)
		}
		if spool, err = filepath.Abs(spool); err != nil {
			return fmt.Errorf("sandbox: %w", err)
		}
		opts.ReadWrite = append(opts.ReadWrite, spool)
		ro(cfg.Alert.Rules, cfg.Alert.Sigma, m.CAFile, m.AuthPassFile)
		port := m.Port
		if port == 0 {
			port = map[mail.TLSMode]int{"": mail.PortStartTLS, mail.TLSStartTLS: mail.PortStartTLS, mail.TLSImplicit: mail.PortImplicit, mail.TLSNone: mail.PortNone}[m.TLS]
		}
		ports = append(ports, uint16(port))
		names = names || net.ParseIP(strings.Trim(m.Mailhub, "[]")) == nil
		tls = tls || (m.TLS != mail.TLSNone && m.CAFile == "" && m.PinSHA256 == "")
	}
	for _, sk := range cfg.Forward.Sinks {
		ro(sk.TLS.CA, sk.TLS.Cert, sk.TLS.Key)
		switch sk.Type {
		case forward.SinkFile:
			dir, err := filepath.Abs(filepath.Dir(sk.Address))
			if err != nil {
				return fmt.Errorf("sandbox: %w", err)
			}
			opts.ReadWrite = append(opts.ReadWrite, dir)
		case forward.SinkStdout:
		default:
			host, port, err := net.SplitHostPort(sk.Address)
			if err != nil {
				return fmt.Errorf("sandbox: sink %s: %w", sk.Name, err)
			}
			if p, err := strconv.ParseUint(port, 10, 16); err == nil {
				ports = append(ports, uint16(p))
			}
			names = names || net.ParseIP(host) == nil
			tls = tls || (sk.TLS.CA == "" && sk.TLS.Pin == "")
		}
	}
	if tls {
		ro(certDirs...)
	}
	if opts.ConnectTCP != nil {
		opts.ConnectTCP = append(opts.ConnectTCP, ports...)
		if names {
			opts.ConnectTCP = append(opts.ConnectTCP, 53)
			ro(resolverFiles...)
		}
	}
	return nil
}

// exeHelperEnv makes the binary (the daemon's own, re-executed before it confines itself) the exe
// helper: every Landlock domain forbids ptrace access to processes outside it, reading /proc/PID/exe
// included, so the confined daemon asks this unconfined child for the executable of an attacker. It
// reads decimal pids, one a line, on stdin and answers each with the link's target (empty if unreadable)
// on a line; it exits at EOF, or when the daemon dies.
const exeHelperEnv = "AUDITARCH_EXE_HELPER"

func init() {
	if os.Getenv(exeHelperEnv) == "1" {
		os.Exit(exeHelper(os.Stdin, os.Stdout))
	}
}

func exeHelper(in io.Reader, out io.Writer) int {
	sc := bufio.NewScanner(in)
	for sc.Scan() {
		exe := ""
		if pid, err := strconv.Atoi(sc.Text()); err == nil && pid > 0 {
			exe, _ = os.Readlink("/proc/" + strconv.Itoa(pid) + "/exe")
		}
		if _, err := fmt.Fprintln(out, strings.ReplaceAll(exe, "\n", `\n`)); err != nil {
			return 1
		}
	}
	return 0
}

// exeResolver is the daemon's link to its exe helper (nil: none started).
var exeResolver struct {
	sync.Mutex
	in   io.Writer
	pipe *os.File // the helper's stdout, for read deadlines
	out  *bufio.Reader
}

// startExeHelper starts the exe helper. Called before the sandbox: it execs the daemon's binary.
func startExeHelper() error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	cmd := exec.Command(self)
	cmd.Env = []string{exeHelperEnv + "=1"}
	cmd.SysProcAttr = &unix.SysProcAttr{Pdeathsig: unix.SIGKILL}
	in, err := cmd.StdinPipe()
	if err != nil {
		return err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	f, ok := out.(*os.File)
	if !ok {
		return fmt.Errorf("exe helper: stdout is a %T", out)
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	go cmd.Wait()
	exeResolver.Lock()
	exeResolver.in, exeResolver.pipe, exeResolver.out = in, f, bufio.NewReader(f)
	exeResolver.Unlock()
	return nil
}

// helperExe asks the exe helper for the executable of pid: "" without a helper or an answer.
func helperExe(pid int) string {
	exeResolver.Lock()
	defer exeResolver.Unlock()
	if exeResolver.in == nil {
		return ""
	}
	if _, err := fmt.Fprintln(exeResolver.in, pid); err != nil {
		exeResolver.in = nil
		return ""
	}
	// The response to an attack must not wait on the helper: a slow or dead one is dropped.
	exeResolver.pipe.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	line, err := exeResolver.out.ReadString('\n')
	if err != nil {
		exeResolver.in = nil
		return ""
	}
	return strings.TrimSuffix(line, "\n")
}
