// Package testhook holds the hooks through which archive's tests play an attacker who can read the
// writer's memory. Production code never sets them.
package testhook

// EpochKey, when set, is shown each epoch key the writer generates (its private key and its note
// verifier key) before the key is used, as a thief with access to the daemon's memory would see it.
var EpochKey func(priv []byte, vkey string)
