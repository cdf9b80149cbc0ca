package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"golang.org/x/mod/sumdb/note"

	"github.com/auditarch/auditarch/archive"
	"github.com/auditarch/auditarch/archive/receipt"
	"github.com/auditarch/auditarch/archive/verify"
)

// Exit statuses of verify beyond 0 (pass), 1 (error) and 2 (usage).
const (
	exitIncomplete = 3 // authentic as far as it goes, but evidence is missing or unsigned
	exitTampered   = 4 // something was altered, re-signed, spliced, replayed or rolled back
)

func verifyCmd(args []string, stdout io.Writer) error {
	fs := newFlags("verify")
	keyFile := fs.String("key", "", "")
	asJSON := fs.Bool("json", false, "")
	witness := fs.String("witness", "", "")
	grace := fs.Duration("grace", 0, "")
	storeKeyFile := fs.String("store-key", "", "")
	receiptsFile := fs.String("receipts", "", "")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) == 0 {
		return fmt.Errorf("%w: verify needs at least one archive directory", errUsage)
	}
	if *witness != "" && len(pos) > 1 {
		return fmt.Errorf("%w: --witness applies to one archive directory", errUsage)
	}
	if *receiptsFile != "" && *storeKeyFile == "" {
		return fmt.Errorf("%w: --receipts needs --store-key (the store's public key, store.pub)", errUsage)
	}
	if *receiptsFile != "" && len(pos) > 1 {
		return fmt.Errorf("%w: --receipts applies to one archive directory", errUsage)
	}
	if *storeKeyFile != "" && *receiptsFile == "" {
		// The host's own DIR/receipts is not evidence: root on the host can delete it or cut it back to
		// an old receipt. Only the store's copy is.
		return &hinted{fmt.Errorf("%w: --store-key needs --receipts FILE, the store's receipts for this host", errUsage),
			"copy hosts/<origin>/receipts from the store (the host's own DIR/receipts can be cut back by root on the host), or run auditarch store verify on the store"}
	}
	opts := verify.Options{Grace: *grace}
	var storeKey *receipt.CosignVerifier
	if *storeKeyFile != "" {
		if storeKey, err = receipt.LoadCosignVerifier(*storeKeyFile); err != nil {
			return err
		}
	}
	if *keyFile != "" {
		v, _, err := archive.LoadVerifierKey(*keyFile)
		if err != nil {
			return err
		}
		opts.Key = v
	}
	if *witness != "" {
		data, err := os.ReadFile(*witness)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("read witness: %w", err)
		}
		if len(data) > 0 {
			opts.Witness = data
		}
	}
	worst := verify.Pass
	var reports []*verify.Report
	for _, dir := range pos {
		o := opts
		if storeKey != nil {
			o.StoreKey = storeKey
			if o.Receipts, err = loadReceipts(*receiptsFile, storeKey); err != nil {
				return err
			}
			if len(o.Receipts) == 0 {
				return fmt.Errorf("verify: %s holds no receipt", *receiptsFile)
			}
		}
		r, err := verify.Dir(dir, o)
		if err != nil {
			return err
		}
		reports = append(reports, r)
		worst = worse(worst, r.Status)
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if len(reports) == 1 {
			err = enc.Encode(reports[0])
		} else {
			err = enc.Encode(reports)
		}
		if err != nil {
			return err
		}
	} else {
		for _, r := range reports {
			printReport(stdout, r)
		}
	}
	// The witness moves forward only over an archive that passed, so that a later rollback is caught.
	if *witness != "" && worst == verify.Pass && reports[0].Latest != "" {
		if err := os.WriteFile(*witness, []byte(reports[0].Latest), 0o600); err != nil {
			return fmt.Errorf("write witness: %w", err)
		}
	}
	switch worst {
	case verify.Tampered:
		return &exitError{exitTampered, errors.New("verify: the archive was tampered with (see above)")}
	case verify.Incomplete:
		return &exitError{exitIncomplete, errors.New("verify: evidence is incomplete (see above)")}
	}
	return nil
}

// loadReceipts reads the store receipts in file. Every receipt must open under store: one that does not
// is an error, not something to skip; so is a file without any.
func loadReceipts(file string, store *receipt.CosignVerifier) ([]receipt.Receipt, error) {
	rs, bad, err := receipt.Read(file, store)
	var ce *archive.CorruptError
	switch {
	case errors.As(err, &ce) && ce.Torn:
		hint := "the file holds no complete receipt (the writer stopped while appending the first)"
		if ce.Offset > 0 {
			hint = fmt.Sprintf("the writer stopped while appending; the receipts before offset %d are intact: pass a copy cut there with --receipts", ce.Offset)
		}
		return nil, &hinted{fmt.Errorf("verify: %w", err), hint}
	case err != nil:
		return nil, fmt.Errorf("verify: %w", err)
	case bad > 0:
		which := "the receipt is"
		if n := bad + len(rs); n > 1 {
			which = fmt.Sprintf("%d of %d receipts are", bad, n)
		}
		return nil, &hinted{fmt.Errorf("verify: %s: %s not signed by the pinned store key %s+%08x", file, which, store.Name(), store.KeyHash()),
			"pass the public key (store.pub) of the store that issued the receipts with --store-key"}
	}
	return rs, nil
}

func worse(a, b string) string {
	rank := map[string]int{verify.Pass: 0, verify.Incomplete: 1, verify.Tampered: 2}
	if rank[b] > rank[a] {
		return b
	}
	return a
}

// printReport prints r for people.
func printReport(w io.Writer, r *verify.Report) {
	pin := "pinned"
	if !r.Pinned {
		pin = "NOT pinned: trusting the key named in the archive; pass --key host.pub"
	}
	fmt.Fprintf(w, "archive %s: origin %s, identity %s (%s)\n", r.Dir, r.Origin, keyName(r.Identity), pin)
	for _, s := range r.Segments {
		state := "open"
		if s.Sealed {
			state = "sealed"
		}
		fmt.Fprintf(w, "  %s %s  segment %d, %s", s.Status, s.File, s.Segment, state)
		switch {
		case s.Leaves == 0:
		case s.Verified == 0:
			fmt.Fprintf(w, ", none of leaves %d..%d verified, time %s..%s, no checkpoint",
				s.FirstIndex, s.FirstIndex+s.Leaves-1, s.FirstTime, s.LastTime)
		default:
			fmt.Fprintf(w, ", verified leaves %d..%d of %d..%d, time %s..%s, %d checkpoints",
				s.FirstIndex, s.FirstIndex+s.Verified-1, s.FirstIndex, s.FirstIndex+s.Leaves-1, s.FirstTime, s.LastTime, s.Checkpoints)
		}
		fmt.Fprintln(w)
	}
	for _, p := range r.Problems {
		at := ""
		if p.Index != nil {
			at = fmt.Sprintf(" at leaf %d", *p.Index)
		}
		where := ""
		if p.Segment != "" {
			where = " in " + p.Segment
		}
		fmt.Fprintf(w, "  %s [%s]%s%s: %s\n", strings.ToLower(p.Class), p.Code, where, at, p.Message)
	}
	if t := r.Unsigned; t != nil {
		// A writer signs every block it writes: leaves after the last checkpoint were appended by
		// someone else (reported above); torn bytes are a block being written, or cut by a crash.
		fmt.Fprintf(w, "  unsealed tail: %s", t.Segment)
		if t.Leaves > 0 {
			fmt.Fprintf(w, ": %d unsigned leaves from %d (see above)", t.Leaves, t.First)
		}
		if t.Torn > 0 {
			how := "a crash cut it"
			if r.Live {
				how = "the writer is writing it"
			}
			fmt.Fprintf(w, ": a torn block of %d bytes (%s)", t.Torn, how)
		}
		fmt.Fprintln(w)
	}
	for _, run := range r.Runs {
		fmt.Fprintf(w, "  run from leaf %d (%s): %s", run.Start, run.StartTime, run.Ended)
		if run.Stop != nil {
			fmt.Fprintf(w, " at leaf %d (%s)", *run.Stop, run.StopTime)
		}
		if rec := run.Recovered; rec != nil {
			fmt.Fprintf(w, "; recovered after a crash: the previous run ended in %s", rec.Segment)
			if rec.Unsigned > 0 {
				fmt.Fprintf(w, " with %d leaves after its last checkpoint (appended by someone else: see above)", rec.Unsigned)
			}
			if rec.TornBytes > 0 {
				fmt.Fprintf(w, ", %d torn bytes at offset %d", rec.TornBytes, rec.TornOffset)
			}
		}
		fmt.Fprintln(w)
	}
	for _, l := range r.Lost {
		fmt.Fprintf(w, "  lost at leaf %d (%s): %d %s, reason %s", l.Index, l.Time, l.Count, l.Unit, l.Reason)
		if l.Since != "" {
			fmt.Fprintf(w, ", no daemon registered from %s", l.Since)
		}
		if l.First != 0 {
			fmt.Fprintf(w, ", kernel serials %d..%d", l.First, l.Last)
		}
		fmt.Fprintln(w)
	}
	if r.Partial > 0 {
		fmt.Fprintf(w, "  partial events: %d archived with some of their kernel records missing (the kernel's lost records)\n", r.Partial)
	}
	if rc := r.Receipt; rc != nil {
		what := rc.Status
		switch rc.Status {
		case verify.ReceiptUnchecked:
			what = "not checked: the archive's leaves there are missing or unreadable (see above)"
		case verify.ReceiptConsistent:
		default:
			what += " (see above)"
		}
		fmt.Fprintf(w, "  store receipt: %d leaves at %s: %s\n", rc.Size, rc.Time, what)
	}
	if p := r.Pruned; p != nil {
		switch {
		case p.Status == verify.PruneAttested:
			fmt.Fprintf(w, "  pruned: leaves 0..%d attested by store receipt of %d leaves at %s (%d segment files removed by retention)\n",
				p.Leaves-1, p.Receipt.Size, p.Receipt.Time, p.Segments)
		default:
			fmt.Fprintf(w, "  pruned: leaves 0..%d removed by retention are NOT attested (%s): %s\n", p.Leaves-1, p.Status, p.Message)
		}
	}
	fmt.Fprintf(w, "%s: %s: %d leaves from %d, %d verified, time %s..%s\n", r.Status, r.Dir, r.Leaves, r.FirstIndex, r.Verified, r.FirstTime, r.LastTime)
}

// keyName shortens a verifier key to name+hash.
func keyName(vkey string) string {
	if v, err := note.NewVerifier(vkey); err == nil {
		return fmt.Sprintf("%s+%08x", v.Name(), v.KeyHash())
	}
	return vkey
}
