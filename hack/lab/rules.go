package lab

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"regexp"
	"sort"
	"strings"
	"time"
)

// Readers of iptables-save text, for tests that check what a proxy left.

// ServiceChainRE matches the per-service chains kube-proxy and svcproxy
// write (KUBE-SVC/SVL/SEP/EXT/FW-<16 characters of hash>).
var ServiceChainRE = regexp.MustCompile(`KUBE-(SVC|SVL|SEP|EXT|FW)-[A-Z0-9]{16}`)

var jumpRE = regexp.MustCompile(`-[jg] (KUBE-\S+)`)

// DeclaredChains returns the chains declared (":NAME ...") in save whose
// name matches re, sorted.
func DeclaredChains(save string, re *regexp.Regexp) []string {
	var out []string
	for _, line := range strings.Split(save, "\n") {
		if !strings.HasPrefix(line, ":") {
			continue
		}
		if name, _, _ := strings.Cut(line[1:], " "); re.MatchString(name) {
			out = append(out, name)
		}
	}
	sort.Strings(out)
	return out
}

// OrphanChains returns the per-service chains (ServiceChainRE) declared in
// save that no rule jumps to: stale chains a sync should have deleted.
func OrphanChains(save string) []string {
	referenced := map[string]bool{}
	for _, line := range strings.Split(save, "\n") {
		if strings.HasPrefix(line, "-A ") {
			for _, m := range jumpRE.FindAllStringSubmatch(line, -1) {
				referenced[m[1]] = true
			}
		}
	}
	var out []string
	for _, c := range DeclaredChains(save, ServiceChainRE) {
		if !referenced[c] {
			out = append(out, c)
		}
	}
	return out
}

// SaveStdout runs `<bin> -t table` (bin: iptables-nft-save, ip6tables-legacy-save,
// ...) inside namespace ns and returns its standard output only: unlike
// SaveTable (combined output), the warnings iptables-nft-save writes to
// stderr when legacy tables exist in the namespace ("# Warning:
// iptables-legacy tables present ...") cannot land in the middle of a rule.
// Bounded by ctx and 60 s.
func SaveStdout(ctx context.Context, ns, bin, table string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", ns, bin, "-t", table)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("lab: %s -t %s in %s: %w: %s", bin, table, ns, err, strings.TrimSpace(stderr.String()))
	}
	return string(out), nil
}
