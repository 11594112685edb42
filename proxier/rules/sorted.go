package rules

import (
	"bytes"
	"slices"
	"strings"
)

// Sorted rewrites restore text for reading: per table, every declaration
// first, sorted by name, then each chain's rules, chains sorted by name (a
// chain's rules keep their order). It is still valid restore input, the
// same rules; iptables-nft restores it more slowly with --noflush than the
// compact layout's own order (see tableWriter.writeNFTOrder). Lines that
// are neither declarations nor rules keep their place before the table's
// declarations (there are none in svcproxy's output).
func Sorted(data []byte) []byte {
	var out bytes.Buffer
	var decls, other []string
	rules := map[string][]string{}
	flush := func() {
		slices.Sort(decls)
		for _, l := range other {
			out.WriteString(l + "\n")
		}
		for _, l := range decls {
			out.WriteString(l + "\n")
		}
		chains := make([]string, 0, len(rules))
		for c := range rules {
			chains = append(chains, c)
		}
		slices.Sort(chains)
		for _, c := range chains {
			for _, l := range rules[c] {
				out.WriteString(l + "\n")
			}
		}
		decls, other, rules = nil, nil, map[string][]string{}
	}
	for _, line := range strings.Split(strings.TrimSuffix(string(data), "\n"), "\n") {
		switch {
		case strings.HasPrefix(line, "*"):
			out.WriteString(line + "\n")
		case line == "COMMIT":
			flush()
			out.WriteString(line + "\n")
		case strings.HasPrefix(line, ":"):
			decls = append(decls, line)
		case strings.HasPrefix(line, "-A "):
			chain, _, _ := strings.Cut(line[3:], " ")
			rules[chain] = append(rules[chain], line)
		default:
			other = append(other, line)
		}
	}
	return out.Bytes()
}
