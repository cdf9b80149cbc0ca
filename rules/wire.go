package rules

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"slices"

	"github.com/elastic/go-libaudit/v2/rule"
)

// The head of the kernel's struct audit_rule_data (include/uapi/linux/audit.h): flags, then action.
// flags is the filter list number, ORed with AUDIT_FILTER_PREPEND to add at the front of the list.
const (
	filterPrepend = 0x10 // AUDIT_FILTER_PREPEND; the kernel clears it once the rule is in place
	filterExit    = 4    // AUDIT_FILTER_EXIT, the list syscall rules and watches live on
	ruleHeaderLen = 8
)

func flagsOf(w rule.WireFormat) uint32 {
	if len(w) < ruleHeaderLen {
		return 0
	}
	return binary.NativeEndian.Uint32(w)
}

func listOf(w rule.WireFormat) uint32 { return flagsOf(w) &^ filterPrepend }

func isPrepend(w rule.WireFormat) bool { return flagsOf(w)&filterPrepend != 0 }

func withPrepend(w rule.WireFormat) rule.WireFormat {
	w = slices.Clone(w)
	binary.NativeEndian.PutUint32(w, flagsOf(w)|filterPrepend)
	return w
}

func withoutPrepend(w rule.WireFormat) rule.WireFormat {
	if !isPrepend(w) {
		return w
	}
	w = slices.Clone(w)
	binary.NativeEndian.PutUint32(w, listOf(w))
	return w
}

// sameRule reports whether a and b are the same rule, wherever each was to be added.
func sameRule(a, b rule.WireFormat) bool {
	return bytes.Equal(withoutPrepend(a), withoutPrepend(b))
}

// commandLine prints w as auditctl -l does, numbers in decimal (rule.ToCommandLine without resolving ids).
func commandLine(w rule.WireFormat) (string, error) {
	s, err := rule.ToCommandLine(withoutPrepend(w), false)
	if err != nil {
		return "", fmt.Errorf("decode rule: %w", err)
	}
	return s, nil
}
