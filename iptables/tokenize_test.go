package iptables

import (
	"slices"
	"testing"
)

func TestSplitLine(t *testing.T) {
	// Expectations checked against iptables-restore v1.8.9 (both backends).
	tests := []struct {
		line    string
		want    []string
		wantErr bool
	}{
		{line: "", want: nil},
		{line: "   \t ", want: nil},
		{line: "-A FOO -j ACCEPT", want: []string{"-A", "FOO", "-j", "ACCEPT"}},
		{line: "-A  FOO\t-j   ACCEPT  ", want: []string{"-A", "FOO", "-j", "ACCEPT"}},
		{line: `-m comment --comment "ns/svc:http cluster IP" -j X`, want: []string{"-m", "comment", "--comment", "ns/svc:http cluster IP", "-j", "X"}},
		{line: `--comment ns/web:http`, want: []string{"--comment", "ns/web:http"}},
		{line: `--comment ""`, want: []string{"--comment", ""}},
		{line: `--comment "a b\"c"`, want: []string{"--comment", `a b"c`}},
		{line: `--comment "a\\b"`, want: []string{"--comment", `a\b`}},
		{line: `--comment a\b`, want: []string{"--comment", `a\b`}},
		// An opening quote mid-word continues the word...
		{line: `--comment x"y z"`, want: []string{"--comment", "xy z"}},
		// ...and a closing quote ends it.
		{line: `--comment "x y"w`, want: []string{"--comment", "x y", "w"}},
		{line: `--comment "abc -j ACCEPT`, wantErr: true},
	}
	for _, tt := range tests {
		got, err := SplitLine(tt.line)
		if (err != nil) != tt.wantErr {
			t.Errorf("SplitLine(%q) error = %v, want error %v", tt.line, err, tt.wantErr)
			continue
		}
		if !slices.Equal(got, tt.want) {
			t.Errorf("SplitLine(%q) = %q, want %q", tt.line, got, tt.want)
		}
	}
}

func TestQuoteArgRoundTrip(t *testing.T) {
	tests := []struct{ arg, want string }{
		{"plain", "plain"},
		{"ns/web:http", "ns/web:http"},
		{"", `""`},
		{"two words", `"two words"`},
		{`say "hi"`, `"say \"hi\""`},
		{`back\slash`, `"back\\slash"`},
		{"tab\there", "\"tab\there\""},
	}
	for _, tt := range tests {
		if got := QuoteArg(tt.arg); got != tt.want {
			t.Errorf("QuoteArg(%q) = %s, want %s", tt.arg, got, tt.want)
		}
		back, err := SplitLine(QuoteArg(tt.arg))
		if err != nil || len(back) != 1 || back[0] != tt.arg {
			t.Errorf("SplitLine(QuoteArg(%q)) = %q, %v; want the argument back", tt.arg, back, err)
		}
	}
	args := []string{"-m", "comment", "--comment", "a b", "-j", "X"}
	if got, _ := SplitLine(JoinArgs(args)); !slices.Equal(got, args) {
		t.Errorf("SplitLine(JoinArgs(%q)) = %q", args, got)
	}
}
