// Package alert tells the administrator: it renders every archived event as one stable line
// (docs/alert.md, "The line"), classifies it with logcheck's layout and order — attack (cracking.d),
// violation (violations.d), unusual (whatever the level's ignore.d.* lists leave) — and with SigmaHQ
// auditd rules evaluated on each raw record and on the decoded event.
//
// Invariants: the line of an event depends only on the leaf (never on the host's state, names or the
// clock), holds no newline and quotes every value a process chose; a classifier's verdict depends only
// on the line, the raw records and the rules it loaded; loading reads bounded files and reports the
// file and line of a pattern that does not compile.
package alert
