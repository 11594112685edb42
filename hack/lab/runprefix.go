package lab

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// Test labs are named per process: a fixed stem (one per test package or
// test, e.g. "svpdp") followed by the pid of the test binary ("svpdp4711").
// Two runs of the same tests at once never share namespaces, and a lab whose
// process is gone is stale: DownStale removes it, and RunPrefix calls
// DownStale, so a crashed run's lab goes with the next run of its tests.
//
// A stem ends with a letter and the suffix is digits only, so no prefix of
// one stem ("svpe" + pid) can be read as another's ("svpee" + pid).

// MaxStem is the longest stem: with a pid of up to 7 digits (pid_max is at
// most 4194304) the prefix stays within its 12 characters.
const MaxStem = 5

var stemRE = regexp.MustCompile(`^[a-z]([a-z0-9]*[a-z])?$`)

// RunPrefix returns the lab prefix for this process's tests: stem followed
// by the pid. It first removes the labs of stem left by processes that are
// gone (DownStale); that error, if any, is returned with the prefix. Within
// one process a stem names one lab at a time (Up replaces it).
func RunPrefix(stem string) (string, error) {
	if err := checkStem(stem); err != nil {
		return "", err
	}
	p := stem + strconv.Itoa(os.Getpid())
	if !prefixRE.MatchString(p) {
		return "", fmt.Errorf("lab: prefix %q (stem %q + pid) is too long", p, stem)
	}
	return p, DownStale(stem)
}

func checkStem(stem string) error {
	if len(stem) > MaxStem || !stemRE.MatchString(stem) {
		return fmt.Errorf("lab: bad stem %q (want [a-z][a-z0-9]* ending in a letter, at most %d characters)", stem, MaxStem)
	}
	return nil
}

// stalePrefixes returns the run prefixes of stem (stem + pid) found in
// names whose process is gone.
func stalePrefixes(stem string, names []string, prefixOf func(string) string) []string {
	re := regexp.MustCompile(`^` + regexp.QuoteMeta(stem) + `([0-9]+)$`)
	seen := map[string]bool{}
	var out []string
	for _, n := range names {
		p := prefixOf(n)
		m := re.FindStringSubmatch(p)
		if m == nil || seen[p] {
			continue
		}
		seen[p] = true
		if pid, err := strconv.Atoi(m[1]); err == nil && pid != os.Getpid() && !pidAlive(pid) {
			out = append(out, p)
		}
	}
	sort.Strings(out)
	return out
}

// DownStale removes every lab whose prefix is stem followed by the pid of a
// process that no longer runs: its namespaces and whatever runs in them
// (DownPrefix; that includes a control plane), the etcd data dir of its
// control plane, and its state dir under the default location
// (/tmp/svcproxy-lab-<prefix>, logs included). Labs of live processes are
// left alone. Idempotent; bounded in time.
func DownStale(stem string) error {
	if err := checkStem(stem); err != nil {
		return err
	}
	var names []string
	if entries, err := os.ReadDir("/run/netns"); err == nil {
		for _, e := range entries {
			names = append(names, e.Name())
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return err
	}
	var errs []error
	for _, p := range stalePrefixes(stem, names, func(ns string) string {
		if p, _, ok := strings.Cut(ns, "-"); ok && nsNameRE(p).MatchString(ns) {
			return p
		}
		return ""
	}) {
		errs = append(errs, DownPrefix(p))
	}

	// State and etcd dirs, also of runs that ended normally (Down keeps logs).
	tmpDirs, _ := filepath.Glob(filepath.Join(os.TempDir(), "svcproxy-lab-"+stem+"*"))
	for _, p := range stalePrefixes(stem, tmpDirs, func(d string) string {
		return strings.TrimPrefix(filepath.Base(d), "svcproxy-lab-")
	}) {
		errs = append(errs, os.RemoveAll(filepath.Join(os.TempDir(), "svcproxy-lab-"+p)))
	}
	for _, base := range []string{"/dev/shm", os.TempDir()} { // see StartControlPlane
		etcdDirs, _ := filepath.Glob(filepath.Join(base, "svcproxy-etcd-"+stem+"*"))
		for _, p := range stalePrefixes(stem, etcdDirs, func(d string) string {
			p, _, _ := strings.Cut(strings.TrimPrefix(filepath.Base(d), "svcproxy-etcd-"), "-")
			return p
		}) {
			dirs, _ := filepath.Glob(filepath.Join(base, "svcproxy-etcd-"+p+"-*"))
			for _, d := range dirs {
				errs = append(errs, os.RemoveAll(d))
			}
		}
	}
	return errors.Join(errs...)
}
