package iptables

import (
	"errors"
	"strings"
	"testing"
)

func TestRestoreErrorLine(t *testing.T) {
	// Real stderr from iptables-restore v1.8.9.
	tests := []struct {
		name, stderr string
		want         int
	}{
		{"nft missing chain", "iptables-nft-restore v1.8.9 (nf_tables): Chain 'BAR' does not exist\nError occurred at line: 4\nTry `iptables-nft-restore -h' or 'iptables-nft-restore --help' for more information.\n", 4},
		{"legacy kernel error", "iptables-restore: line 2 failed\n", 2},
		{"nft kernel error", "iptables-nft-restore: line 12 failed: Index of insertion too big.\n", 12},
		{"nft chain delete", "iptables-nft-restore v1.8.9 (nf_tables): \nline 7: CHAIN_DEL failed (Device or resource busy): chain FOO\n", 7},
		{"no line", "iptables-restore: unable to initialize table 'nat'\n", 0},
	}
	for _, tt := range tests {
		if got := restoreErrorLine(tt.stderr); got != tt.want {
			t.Errorf("%s: restoreErrorLine = %d, want %d", tt.name, got, tt.want)
		}
	}
}

func TestExtractLines(t *testing.T) {
	data := []byte("one\ntwo\nthree\nfour\nfive\nsix\nseven\neight\nnine\nten\neleven\n")
	tests := []struct {
		line, context int
		want          string
	}{
		{1, 2, "> 1: one\n  2: two\n  3: three\n"},
		{11, 1, "  10: ten\n> 11: eleven\n"},
		{9, 1, "   8: eight\n>  9: nine\n  10: ten\n"},
		{5, 0, "> 5: five\n"},
		{0, 3, ""},
		{12, 3, ""},
	}
	for _, tt := range tests {
		if got := ExtractLines(data, tt.line, tt.context); got != tt.want {
			t.Errorf("ExtractLines(line %d, context %d) =\n%q\nwant\n%q", tt.line, tt.context, got, tt.want)
		}
	}
}

func TestRestoreErrorMessage(t *testing.T) {
	inner := errors.New("exit status 1")
	e := &RestoreError{Line: 0, Stderr: "", Err: inner}
	if e.Error() != "iptables-restore failed: exit status 1" || !errors.Is(e, inner) {
		t.Errorf("Error() = %q", e.Error())
	}
	e = &RestoreError{Line: 3, Lines: "> 3: x\n", Stderr: "boom\n", Err: inner}
	if got := e.Error(); !strings.HasPrefix(got, "iptables-restore failed at line 3: boom\n> 3: x") {
		t.Errorf("Error() = %q", got)
	}
}
