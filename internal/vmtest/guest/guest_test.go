package guest

import "testing"

func TestParseExit(t *testing.T) {
	for _, c := range []struct {
		line   string
		status int
		ok     bool
	}{
		{ExitLine(0), 0, true},
		{ExitLine(-1), -1, true},
		{"[    2.1] some kernel message" + ExitLine(3), 3, true},
		{"--- PASS: TestX (0.01s)", 0, false},
		{"<<vmtest exit status x>>", 0, false},
	} {
		status, ok := ParseExit(c.line)
		if status != c.status || ok != c.ok {
			t.Errorf("ParseExit(%q) = %d, %v; want %d, %v", c.line, status, ok, c.status, c.ok)
		}
	}
}
