//go:build ignore

// helper makes the system calls that capture.sh has no command for, so that the real kernel audits
// them: go run helper.go finit|initmod|bpf|memfdexec|listen|settime|ptrace PID
package main

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"golang.org/x/sys/unix"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "helper:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	switch args[0] {
	case "finit": // finit_module on a file that is not a module: refused, audited
		f, err := os.Open("/bin/true")
		if err != nil {
			return err
		}
		defer f.Close()
		err = unix.FinitModule(int(f.Fd()), "", 0)
		fmt.Println("finit_module:", err)
	case "initmod":
		err := unix.InitModule([]byte("not a module"), "")
		fmt.Println("init_module:", err)
	case "bpf": // a socket filter program (loads here, where LSM programs do not)
		prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.SocketFilter, License: "GPL",
			Instructions: asm.Instructions{asm.LoadImm(asm.R0, 0, asm.DWord), asm.Return()}})
		if err != nil {
			return err
		}
		prog.Close()
	case "memfdexec": // exec of a file that has no name: exe is "/memfd:... (deleted)"
		fd, err := unix.MemfdCreate("payload", 0)
		if err != nil {
			return err
		}
		b, err := os.ReadFile("/bin/true")
		if err != nil {
			return err
		}
		if _, err := unix.Write(fd, b); err != nil {
			return err
		}
		path := "/proc/self/fd/" + strconv.Itoa(fd) // fexecve: the kernel execs the memfd itself
		return unix.Exec(path, []string{"payload"}, os.Environ())
	case "listen": // a new listening service and an inbound connection
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		defer l.Close()
		go func() {
			if c, err := net.Dial("tcp", l.Addr().String()); err == nil {
				time.Sleep(100 * time.Millisecond)
				c.Close()
			}
		}()
		c, err := l.Accept()
		if err != nil {
			return err
		}
		c.Close()
	case "settime": // step the clock to what it reads (a time change of microseconds)
		var ts unix.Timespec
		if err := unix.ClockGettime(unix.CLOCK_REALTIME, &ts); err != nil {
			return err
		}
		return unix.ClockSettime(unix.CLOCK_REALTIME, &ts)
	case "ptrace":
		pid, err := strconv.Atoi(args[1])
		if err != nil {
			return err
		}
		err = unix.PtraceSeize(pid)
		fmt.Println("ptrace seize:", err)
		if err == nil {
			unix.PtraceDetach(pid)
		}
	default:
		return fmt.Errorf("unknown %q", args[0])
	}
	return nil
}
