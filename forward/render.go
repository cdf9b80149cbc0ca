package forward

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/auditarch/auditarch/archive"
	"github.com/auditarch/auditarch/forward/ecs"
)

// Render renders archived leaves in one of the sink formats; the sinks and `auditarch export` share it.
// It is not safe for concurrent use.
type Render struct {
	format   string
	facility int
	host     string
	r        *ecs.Renderer
}

// NewRender returns a renderer of format (FormatECS or FormatRFC5424). facility is the syslog facility
// (0: authpriv).
func NewRender(format string, facility int, opts ecs.Options) (*Render, error) {
	if format != FormatECS && format != FormatRFC5424 {
		return nil, fmt.Errorf("unknown format %q (ecs, rfc5424)", format)
	}
	if facility <= 0 || facility > 23 {
		facility = 10
	}
	return &Render{format: format, facility: facility, host: opts.Host.Name, r: ecs.NewRenderer(opts)}, nil
}

type renderer = Render

func newRenderer(cfg SinkConfig, opts SinkOptions) *renderer {
	r, _ := NewRender(cfg.Format, cfg.Facility, ecs.Options{Origin: opts.Origin, Host: opts.Host, Original: cfg.Original})
	return r
}

// Exported reports whether Append renders leaves of kind k (ecs.Exported).
func Exported(k archive.LeafKind) bool { return ecs.Exported(k) }

// PEN is the private enterprise number of the structured-data id auditarch@PEN: 32473, the one RFC 5612
// reserves for documentation, until auditarch has its own.
const PEN = 32473

// append appends the rendering of leaf l at index i (no trailing newline).
func (r *Render) append(b []byte, l *archive.Leaf, i uint64) ([]byte, error) {
	d := r.r.Leaf(l, i)
	if d == nil {
		return b, fmt.Errorf("leaf %d: %s leaves are not exported", i, l.Kind)
	}
	if r.format == FormatECS {
		return ecs.AppendJSON(b, d)
	}
	// RFC 5424: <PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID [SD] MSG; the MSG is the ECS document.
	sev := 6 // informational
	if l.Kind == archive.LeafLost || l.Kind == archive.LeafPolicy {
		sev = 4 // warning
	}
	b = append(b, '<')
	b = strconv.AppendInt(b, int64(r.facility*8+sev), 10)
	b = append(b, ">1 "...)
	ts, _ := d["@timestamp"].(string)
	if t, err := time.Parse(time.RFC3339Nano, ts); err == nil {
		b = t.UTC().AppendFormat(b, "2006-01-02T15:04:05.000000Z")
	} else {
		b = append(b, '-')
	}
	b = append(b, ' ')
	b = appendHeaderField(b, r.host, 255)
	b = append(b, " auditarch - "...)
	action := ""
	if ev, ok := d["event"].(ecs.Doc); ok {
		action, _ = ev["action"].(string)
	}
	b = appendHeaderField(b, action, 32)
	b = append(b, " [auditarch@"...)
	b = strconv.AppendInt(b, PEN, 10)
	b = append(b, ` origin="`...)
	b = appendParam(b, fmt.Sprint(d["auditarch"].(ecs.Doc)["origin"]))
	b = append(b, `" leaf="`...)
	b = strconv.AppendUint(b, i, 10)
	b = append(b, `"] `...)
	return ecs.AppendJSON(b, d)
}

// Append appends the rendering of leaf l at index i, without a newline; the error says the leaf is not
// exported (Exported).
func (r *Render) Append(b []byte, l *archive.Leaf, i uint64) ([]byte, error) {
	return r.append(b, l, i)
}

// appendHeaderField appends a header field: printable US-ASCII, at most n bytes, "-" when empty.
func appendHeaderField(b []byte, s string, n int) []byte {
	start := len(b)
	for i := 0; i < len(s) && len(b)-start < n; i++ {
		if c := s[i]; c > 32 && c < 127 {
			b = append(b, c)
		}
	}
	if len(b) == start {
		b = append(b, '-')
	}
	return b
}

// appendParam appends an SD-PARAM value with '"', '\' and ']' escaped (RFC 5424 section 6.3.3).
func appendParam(b []byte, s string) []byte {
	if !strings.ContainsAny(s, "\"\\]") {
		return append(b, s...)
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c == '"' || c == '\\' || c == ']' {
			b = append(b, '\\')
		}
		b = append(b, s[i])
	}
	return b
}
