package iptables

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// RestoreError is a failed iptables-restore (real or Fake). Line is the
// 1-based line of the input it blamed, or 0 when its message named none;
// Lines shows that line with context (see ExtractLines).
type RestoreError struct {
	Line   int
	Lines  string
	Stderr string
	// Err is the underlying error (an *ExitError, a *LineError, ...).
	Err error
}

func (e *RestoreError) Error() string {
	msg := strings.TrimSpace(e.Stderr)
	if msg == "" && e.Err != nil {
		msg = e.Err.Error()
	}
	if e.Line == 0 {
		return "iptables-restore failed: " + msg
	}
	return fmt.Sprintf("iptables-restore failed at line %d: %s\n%s", e.Line, msg, e.Lines)
}

func (e *RestoreError) Unwrap() error { return e.Err }

// restoreLineREs match the ways iptables-restore names the failing line:
// "line 3 failed" (legacy, and nft for kernel errors), "Error occurred at
// line: 3" (argument errors), "line 3: CHAIN_DEL failed" (nft).
var restoreLineREs = []*regexp.Regexp{
	regexp.MustCompile(`Error occurred at line: (\d+)`),
	regexp.MustCompile(`line (\d+) failed`),
	regexp.MustCompile(`(?m)^line (\d+):`),
}

// restoreErrorLine returns the input line iptables-restore's stderr blames, or 0.
func restoreErrorLine(stderr string) int {
	for _, re := range restoreLineREs {
		if m := re.FindStringSubmatch(stderr); m != nil {
			if n, err := strconv.Atoi(m[1]); err == nil {
				return n
			}
		}
	}
	return 0
}

// ExtractLines returns line (1-based) of data with up to context lines
// either side, each prefixed with its number; the line itself is marked
// with ">". It returns "" when line is out of range.
//
//	  2: :KUBE-SVC-X - [0:0]
//	> 3: -A KUBE-SVC-X -j KUBE-SEP-Y
//	  4: COMMIT
func ExtractLines(data []byte, line, context int) string {
	lines := strings.Split(string(data), "\n")
	if n := len(lines); n > 0 && lines[n-1] == "" {
		lines = lines[:n-1]
	}
	if line < 1 || line > len(lines) {
		return ""
	}
	first, last := max(1, line-context), min(len(lines), line+context)
	width := len(strconv.Itoa(last))
	var b strings.Builder
	for i := first; i <= last; i++ {
		mark := " "
		if i == line {
			mark = ">"
		}
		fmt.Fprintf(&b, "%s %*d: %s\n", mark, width, i, lines[i-1])
	}
	return b.String()
}
