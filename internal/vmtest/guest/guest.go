// Package guest is the contract between the vmtest harness on the host and the init program of its guest:
// where the run's configuration is in the initramfs and how the guest reports the exit status of the
// program it ran.
package guest

import (
	"fmt"
	"regexp"
	"strconv"
)

// ConfigPath is the JSON-encoded Config in the initramfs.
const ConfigPath = "/vmtest/config.json"

// Config says what the guest's init runs once the file systems are mounted.
type Config struct {
	Argv []string // program and arguments; Argv[0] is an absolute guest path
	Env  []string // KEY=value, added to init's base environment
	Dir  string   // working directory of the program
}

// exitFormat is the line init prints on the serial console when the program has ended: its exit status,
// or -1 when it could not run or was killed by a signal. The markers make it unlikely to occur in test
// output by accident; kernel messages may share its line on the console, so it is matched anywhere in one.
const exitFormat = "<<vmtest exit status %d>>"

var exitRE = regexp.MustCompile(`<<vmtest exit status (-?\d+)>>`)

// ExitLine is the marker line for status.
func ExitLine(status int) string { return fmt.Sprintf(exitFormat, status) }

// ParseExit finds the marker in a line of console output.
func ParseExit(line string) (status int, ok bool) {
	m := exitRE.FindStringSubmatch(line)
	if m == nil {
		return 0, false
	}
	status, err := strconv.Atoi(m[1])
	return status, err == nil
}
