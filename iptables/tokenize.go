package iptables

import (
	"fmt"
	"strings"
)

// SplitLine splits one line of iptables-restore input into arguments the way
// iptables-restore itself does (add_param_to_argv in iptables' xshared.c):
//
//   - arguments are separated by runs of spaces, tabs or newlines;
//   - a double quote opens a quoted section in which whitespace is literal and
//     a backslash escapes the next character (so `\"` and `\\` work);
//   - the closing quote also ends the argument, so `"a b"c` is two
//     arguments, "a b" and "c", and `""` is one empty argument;
//   - outside quotes a backslash is an ordinary character.
//
// One deliberate difference: iptables-restore silently accepts an
// unterminated quote (swallowing the rest of the line into one argument,
// which usually loses the -j); SplitLine returns an error instead, because
// such input is always a rendering bug.
func SplitLine(line string) ([]string, error) {
	var (
		args    []string
		cur     strings.Builder
		inArg   bool // cur holds an argument, possibly empty ("")
		inQuote bool
		escaped bool
	)
	flush := func() {
		if inArg {
			args = append(args, cur.String())
		}
		cur.Reset()
		inArg = false
	}
	for _, r := range line {
		switch {
		case inQuote && escaped:
			cur.WriteRune(r)
			escaped = false
		case inQuote && r == '\\':
			escaped = true
		case inQuote && r == '"':
			inQuote = false
			flush()
		case inQuote:
			cur.WriteRune(r)
		case r == '"':
			inQuote = true
			inArg = true
		case r == ' ' || r == '\t' || r == '\n' || r == '\r':
			flush()
		default:
			cur.WriteRune(r)
			inArg = true
		}
	}
	if inQuote {
		return nil, fmt.Errorf("unterminated quote")
	}
	flush()
	return args, nil
}

// QuoteArg returns arg as it should be written in restore input: unchanged
// when SplitLine would read it back as one argument, otherwise double-quoted
// with `"` and `\` escaped.
func QuoteArg(arg string) string {
	if arg != "" && !strings.ContainsAny(arg, " \t\n\r\"\\") {
		return arg
	}
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range arg {
		if r == '"' || r == '\\' {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	b.WriteByte('"')
	return b.String()
}

// JoinArgs is the inverse of SplitLine: it quotes each argument as needed and
// joins them with single spaces.
func JoinArgs(args []string) string {
	quoted := make([]string, len(args))
	for i, a := range args {
		quoted[i] = QuoteArg(a)
	}
	return strings.Join(quoted, " ")
}
