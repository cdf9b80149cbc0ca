package audit

// Clone returns a deep copy of ev that owns its record texts (in one allocation): events passed to a Sink
// are reused after the call.
func (e *RawEvent) Clone() *RawEvent {
	n := 0
	for _, r := range e.Records {
		n += len(r.Text)
	}
	buf := make([]byte, 0, n)
	c := *e
	c.buf = nil
	c.Records = make([]Record, len(e.Records))
	for i, r := range e.Records {
		start := len(buf)
		buf = append(buf, r.Text...)
		c.Records[i] = Record{Type: r.Type, Text: buf[start:len(buf):len(buf)]}
	}
	return &c
}
