// Package ecs renders archived events as Elastic Common Schema documents with Auditbeat's field names
// and values, so that dashboards and detection rules written for Auditbeat's auditd module work on
// auditarch's events unchanged.
//
// The mapping is Auditbeat's (elastic/beats auditbeat/module/auditd/audit_linux.go, buildMetricbeatEvent)
// over go-libaudit v2.6.2's aucoalesce: CoalesceMessages joins the raw records and applies the
// per-syscall normalizations of aucoalesce/normalizations.yaml (event.category, event.type, event.action,
// auditd.summary.*), and ResolveIDsFromCaches names uids and gids. Where auparse cannot read a record —
// split or multi-record EXECVE arguments (a2_len, a2[0]…) — process.args comes from auditarch's own
// decoder (audit.Decode), which rebuilds them exactly. The field table with its sources is
// testdata/fields.tsv; docs/forward.md describes it.
//
// Every document carries auditarch.origin and auditarch.leaf (also event.id "origin:leaf"): the leaf's
// place in the host's tree, a stable id a receiver deduplicates at-least-once delivery with.
package ecs

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/elastic/go-libaudit/v2/aucoalesce"
	"github.com/elastic/go-libaudit/v2/auparse"

	"github.com/auditarch/auditarch/archive"
	"github.com/auditarch/auditarch/audit"
	"github.com/auditarch/auditarch/audit/raw"
)

// ECSVersion is the ecs.version written, the one Auditbeat 8 writes.
const ECSVersion = "8.0.0"

// Doc is one ECS document: nested objects, encoded by encoding/json with sorted keys.
type Doc map[string]any

// Host describes the host the events came from (ECS host.*).
type Host struct {
	Name     string // host.name
	Hostname string // host.hostname; default Name
	ID       string // host.id (e.g. /etc/machine-id); omitted when empty
}

// Options configure a Renderer.
type Options struct {
	Origin string // the archive's origin (its identity key's name): auditarch.origin
	Host   Host
	// Original puts the raw kernel records in event.original, as Auditbeat's include_raw_message does
	// ("type=SYSCALL msg=audit(…): …", one string per record).
	Original bool
	// NoResolve leaves uid and gid names out (Auditbeat's resolve_ids: false).
	NoResolve bool
	// Users and Groups resolve ids to names; default caches over os/user (/etc/passwd, /etc/group)
	// whose entries live a minute.
	Users, Groups *aucoalesce.EntityCache
}

// Renderer renders leaves. It is not safe for concurrent use (its caches are not); make one per goroutine.
type Renderer struct {
	opts Options
	msgs []*auparse.AuditMessage
}

// NewRenderer returns a renderer with opts.
func NewRenderer(opts Options) *Renderer {
	if opts.Host.Hostname == "" {
		opts.Host.Hostname = opts.Host.Name
	}
	if !opts.NoResolve {
		if opts.Users == nil {
			opts.Users = aucoalesce.NewUserCache(time.Minute)
		}
		if opts.Groups == nil {
			opts.Groups = aucoalesce.NewGroupCache(time.Minute)
		}
	}
	return &Renderer{opts: opts}
}

// Exported reports whether a leaf of kind k is exported: events, losses, protection events and the
// daemon's start, stop and clock steps. Key introductions, heartbeats and seals are the evidence chain's
// own bookkeeping and are not.
func Exported(k archive.LeafKind) bool {
	switch k {
	case archive.LeafEvent, archive.LeafLost, archive.LeafPolicy, archive.LeafStart, archive.LeafStop, archive.LeafClock:
		return true
	}
	return false
}

// Leaf renders leaf l at index i, or returns nil when its kind is not exported.
func (r *Renderer) Leaf(l *archive.Leaf, i uint64) Doc {
	switch {
	case !Exported(l.Kind):
		return nil
	case l.Kind == archive.LeafEvent:
		return r.Event(&l.Event, i)
	case l.Kind == archive.LeafLost:
		return r.Lost(&l.Event, i)
	}
	return r.control(l, i)
}

// AppendJSON appends the JSON of d (one line, no newline) to b.
func AppendJSON(b []byte, d Doc) ([]byte, error) {
	j, err := json.Marshal(d)
	if err != nil {
		return b, err
	}
	return append(b, j...), nil
}

func (r *Renderer) base(i uint64, t time.Time) Doc {
	d := Doc{
		"@timestamp": t.UTC().Format(time.RFC3339Nano),
		"ecs":        Doc{"version": ECSVersion},
		"auditarch":  Doc{"origin": r.opts.Origin, "leaf": i},
		"event":      Doc{"kind": "event", "module": "auditd", "id": fmt.Sprintf("%s:%d", r.opts.Origin, i)},
	}
	if h := r.opts.Host; h.Name != "" || h.ID != "" {
		host := Doc{}
		put(host, "name", h.Name)
		put(host, "hostname", h.Hostname)
		put(host, "id", h.ID)
		d["host"] = host
	}
	return d
}

// Event renders a kernel event archived at leaf index i.
func (r *Renderer) Event(ev *raw.Event, i uint64) Doc {
	d := r.base(i, time.Unix(ev.Sec, int64(ev.Msec)*1e6))
	event := d["event"].(Doc)
	event["sequence"] = ev.Serial
	aa := d["auditarch"].(Doc)
	if ev.Late {
		aa["late"] = true
	}
	if !ev.EOE {
		aa["no_eoe"] = true
	}
	if ev.Partial() {
		aa["partial"] = true
	}
	r.msgs = r.msgs[:0]
	var bad []string
	for _, rec := range ev.Records {
		m, err := auparse.Parse(auparse.AuditMessageType(rec.Type), string(rec.Text))
		if err != nil {
			bad = append(bad, audit.TypeName(rec.Type))
			continue
		}
		r.msgs = append(r.msgs, m)
	}
	if r.opts.Original {
		orig := make([]string, len(ev.Records))
		for k, rec := range ev.Records {
			orig[k] = "type=" + audit.TypeName(rec.Type) + " msg=" + string(rec.Text)
		}
		event["original"] = orig
	}
	if len(bad) > 0 {
		aa["unparsed_records"] = bad
	}
	dec := audit.Decode(ev)
	ae, err := aucoalesce.CoalesceMessages(r.msgs)
	if err != nil || ae == nil {
		// What Auditbeat does with an event it cannot coalesce: the error, and the records.
		d["error"] = Doc{"message": fmt.Sprint("coalesce: ", err)}
		if !r.opts.Original {
			orig := make([]string, len(ev.Records))
			for k, rec := range ev.Records {
				orig[k] = "type=" + audit.TypeName(rec.Type) + " msg=" + string(rec.Text)
			}
			event["original"] = orig
		}
		return d
	}
	if !r.opts.NoResolve {
		aucoalesce.ResolveIDsFromCaches(ae, r.opts.Users, r.opts.Groups)
	}
	r.fill(d, ae, dec)
	return d
}

// fill sets the fields of coalesced event ae as Auditbeat's buildMetricbeatEvent does.
func (r *Renderer) fill(d Doc, ae *aucoalesce.Event, dec *audit.Event) {
	event := d["event"].(Doc)
	outcome := ae.Result
	if outcome == "fail" {
		outcome = "failure"
	}
	event["category"] = ae.Category.String() // replaced by the ECS categories below when there are any
	put(event, "action", ae.Summary.Action)
	put(event, "outcome", outcome)
	if len(ae.ECS.Event.Category) > 0 {
		event["category"] = ae.ECS.Event.Category
	}
	if len(ae.ECS.Event.Type) > 0 {
		event["type"] = ae.ECS.Event.Type
	}
	put(event, "outcome", ae.ECS.Event.Outcome)

	auditd := Doc{
		"message_type": strings.ToLower(ae.Type.String()),
		"sequence":     ae.Sequence,
		"result":       ae.Result,
		"data":         data(ae.Data),
	}
	if ae.Session != "unset" {
		put(auditd, "session", ae.Session)
	}
	summary := Doc{}
	putPath(summary, "actor.primary", ae.Summary.Actor.Primary)
	putPath(summary, "actor.secondary", ae.Summary.Actor.Secondary)
	putPath(summary, "object.primary", ae.Summary.Object.Primary)
	putPath(summary, "object.secondary", ae.Summary.Object.Secondary)
	putPath(summary, "object.type", ae.Summary.Object.Type)
	putPath(summary, "how", ae.Summary.How)
	if len(summary) > 0 {
		auditd["summary"] = summary
	}
	if len(ae.Paths) > 0 {
		auditd["paths"] = ae.Paths
	}
	d["auditd"] = auditd

	user := users(ae.User)
	d["user"] = user
	if p := process(ae.Process, dec); p != nil {
		d["process"] = p
	}
	if f := ae.File; f != nil {
		file := Doc{}
		put(file, "path", f.Path)
		put(file, "device", f.Device)
		put(file, "inode", f.Inode)
		put(file, "mode", f.Mode)
		put(file, "uid", f.UID)
		put(file, "gid", f.GID)
		put(file, "owner", f.Owner)
		put(file, "group", f.Group)
		if len(f.SELinux) > 0 {
			file["selinux"] = f.SELinux
		}
		d["file"] = file
	}
	// An abstract unix socket name (a leading NUL) is lost by auparse; auditarch's decoder keeps it,
	// written as ss(8) does: "@name".
	if sa := dec.Sockaddr; sa != nil && sa.Abstract && ae.Dest == nil && ae.Source == nil && ae.Summary.Object.Type == "socket" {
		ae.Dest = &aucoalesce.Address{Path: "@" + sa.Path}
	}
	address(d, "source", ae.Source)
	address(d, "destination", ae.Dest)
	if ae.Net != nil {
		d["network"] = Doc{"direction": ae.Net.Direction.String()}
	}
	if len(ae.Tags) > 0 {
		d["tags"] = ae.Tags
	}

	// user.*, user.effective.*, user.target.*, user.changes.*, group.* from the ECS entities; related.user.
	var related []string
	entity := func(key string, e aucoalesce.ECSEntityData, rel bool) {
		if e.ID == "" && e.Name == "" {
			return
		}
		if e.ID == "unset" {
			e.ID = ""
		}
		putPathOrDelete(d, key+".id", e.ID)
		putPathOrDelete(d, key+".name", e.Name)
		if rel && e.Name != "" && !contains(related, e.Name) {
			related = append(related, e.Name)
		}
	}
	entity("user", ae.ECS.User.ECSEntityData, !r.opts.NoResolve)
	entity("user.effective", ae.ECS.User.Effective, !r.opts.NoResolve)
	entity("user.target", ae.ECS.User.Target, !r.opts.NoResolve)
	entity("user.changes", ae.ECS.User.Changes, !r.opts.NoResolve)
	entity("group", ae.ECS.Group, false)
	if len(related) > 0 {
		d["related"] = Doc{"user": related}
	}
	// user.effective is left out when it is user itself.
	for _, f := range []string{"id", "name"} {
		if v, _ := getPath(d, "user."+f).(string); v != "" && getPath(d, "user.effective."+f) == v {
			delete(d["user"].(Doc), "effective")
			break
		}
	}
	if len(user) == 0 {
		delete(d, "user")
	}
}

// users is Auditbeat's addUser: the kernel's id fields under user.* by ECS name.
func users(u aucoalesce.User) Doc {
	user := Doc{}
	name := map[string]string{"uid": "", "gid": "group.", "euid": "effective.", "egid": "effective.group.",
		"suid": "saved.", "sgid": "saved.group.", "fsuid": "filesystem.", "fsgid": "filesystem.group.", "auid": "audit."}
	prefix := func(k string) string {
		if p, ok := name[k]; ok {
			return p
		}
		return k + "."
	}
	for k, v := range u.IDs {
		if v == "unset" {
			continue
		}
		putPath(user, prefix(k)+"id", v)
		if len(u.SELinux) > 0 {
			user["selinux"] = u.SELinux
		}
	}
	for k, v := range u.Names {
		putPath(user, prefix(k)+"name", v)
	}
	return user
}

// process is Auditbeat's addProcess, with the arguments from dec when auparse could not read them.
func process(p aucoalesce.Process, dec *audit.Event) Doc {
	if len(dec.Args) > 0 && len(dec.ArgsHex) == 0 {
		p.Args = dec.Args
	}
	if p.IsEmpty() {
		return nil
	}
	out := Doc{}
	if n, err := strconv.Atoi(p.PID); err == nil {
		out["pid"] = n
	}
	if n, err := strconv.Atoi(p.PPID); err == nil {
		out["parent"] = Doc{"pid": n}
	}
	put(out, "title", p.Title)
	put(out, "name", p.Name)
	put(out, "executable", p.Exe)
	put(out, "working_directory", p.CWD)
	if len(p.Args) > 0 {
		out["args"] = p.Args
	}
	return out
}

// address is Auditbeat's addAddress: source.* or destination.*.
func address(d Doc, key string, a *aucoalesce.Address) {
	if a == nil {
		return
	}
	out := Doc{}
	put(out, "domain", a.Hostname)
	put(out, "ip", a.IP)
	put(out, "port", a.Port)
	put(out, "path", a.Path)
	d[key] = out
}

// data is Auditbeat's createAuditdData: socket_* keys nest under socket.
func data(m map[string]string) Doc {
	out := Doc{}
	for k, v := range m {
		if rest, ok := strings.CutPrefix(k, "socket_"); ok {
			putPath(out, "socket."+rest, v)
			continue
		}
		putPath(out, k, v)
	}
	return out
}

// Lost renders a LOST leaf: events the kernel or auditarch could not keep, with reason and count.
func (r *Renderer) Lost(ev *raw.Event, i uint64) Doc {
	d := r.base(i, time.Unix(ev.Sec, int64(ev.Msec)*1e6))
	event := d["event"].(Doc)
	event["action"] = "lost-events"
	event["category"] = []string{"host"}
	event["type"] = []string{"info"}
	d["auditd"] = Doc{"message_type": "lost"}
	lost := Doc{"reason": ev.Lost.Reason.String(), "count": ev.Lost.Count, "unit": ev.Lost.Reason.Unit()}
	if ev.Lost.First != 0 || ev.Lost.Last != 0 {
		lost["first_seq"], lost["last_seq"] = ev.Lost.First, ev.Lost.Last
	}
	d["auditarch"].(Doc)["lost"] = lost
	d["tags"] = []string{"auditarch-lost"}
	return d
}

// control renders a POLICY, START, STOP or CLOCK leaf: its JSON body under auditarch.<kind>.
func (r *Renderer) control(l *archive.Leaf, i uint64) Doc {
	d := r.base(i, time.Unix(0, l.Time))
	event := d["event"].(Doc)
	kind := strings.ToLower(l.Kind.String())
	var body map[string]any
	if json.Unmarshal(l.Body, &body) != nil {
		body = map[string]any{}
	}
	d["auditarch"].(Doc)[kind] = body
	d["auditd"] = Doc{"message_type": "auditarch_" + kind}
	switch l.Kind {
	case archive.LeafPolicy:
		var p raw.Policy
		_ = json.Unmarshal(l.Body, &p)
		event["action"] = "policy-" + p.Action
		event["category"] = []string{"intrusion_detection"}
		event["type"] = []string{"info"}
		switch p.Verdict {
		case raw.PolicyVerdictDenied:
			event["type"] = []string{"denied"}
		}
		if p.Sender != nil {
			d["process"] = Doc{"pid": p.Sender.PID, "name": p.Sender.Comm, "executable": p.Sender.Exe}
			d["user"] = Doc{"id": strconv.FormatUint(uint64(p.Sender.UID), 10), "audit": Doc{"id": strconv.FormatUint(uint64(p.Sender.AUID), 10)}}
			if p.Sender.Exe == "" {
				delete(d["process"].(Doc), "executable")
			}
		}
		d["tags"] = []string{"auditarch-policy"}
	case archive.LeafStart:
		event["action"], event["category"], event["type"] = "started-audit", []string{"process"}, []string{"start"}
	case archive.LeafStop:
		event["action"], event["category"], event["type"] = "stopped-audit", []string{"process"}, []string{"end"}
	case archive.LeafClock:
		event["action"], event["category"], event["type"] = "changed-clock", []string{"host"}, []string{"change"}
	}
	return d
}

func put(d Doc, k, v string) {
	if v != "" {
		d[k] = v
	}
}

// putPath sets a dotted key in nested documents (empty values are left out).
func putPath(d Doc, key string, v any) {
	if s, ok := v.(string); ok && s == "" {
		return
	}
	parts := strings.Split(key, ".")
	for _, p := range parts[:len(parts)-1] {
		next, ok := d[p].(Doc)
		if !ok {
			next = Doc{}
			d[p] = next
		}
		d = next
	}
	d[parts[len(parts)-1]] = v
}

func putPathOrDelete(d Doc, key string, v string) {
	if v != "" {
		putPath(d, key, v)
		return
	}
	parts := strings.Split(key, ".")
	for _, p := range parts[:len(parts)-1] {
		next, ok := d[p].(Doc)
		if !ok {
			return
		}
		d = next
	}
	delete(d, parts[len(parts)-1])
}

func getPath(d Doc, key string) any {
	parts := strings.Split(key, ".")
	for _, p := range parts[:len(parts)-1] {
		next, ok := d[p].(Doc)
		if !ok {
			return nil
		}
		d = next
	}
	return d[parts[len(parts)-1]]
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}
