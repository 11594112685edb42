package main

import (
	"fmt"
	"math"
	"strings"
)

// table is the report: notes, then rows by section, one value column per
// daemon variant and one ratio column per (kube-proxy mode, svcproxy
// layout) pair: kube-proxy's value / svcproxy's (above 1 means svcproxy is
// faster or smaller).
type table struct {
	labels  []string // column headers
	ratios  []ratioColumn
	notes   []string
	rows    []row
	section string
	after   []string // lines printed after the table (the targets)
}

type ratioColumn struct {
	name     string // e.g. "kpN/svp"
	num, den int    // variant indexes
}

type row struct {
	section string
	name    string
	format  string
	values  []float64 // one per variant
	lower   []bool    // values[k] is a lower bound (a capped run): printed ">v"
}

// columns sets the value and ratio columns from the variants: every
// kube-proxy variant over every svcproxy variant.
func (t *table) columns(vs []variant) {
	t.labels, t.ratios = nil, nil
	for _, v := range vs {
		t.labels = append(t.labels, v.label)
	}
	for den, s := range vs {
		if !s.svcproxy {
			continue
		}
		for num, k := range vs {
			if !k.svcproxy {
				t.ratios = append(t.ratios, ratioColumn{name: k.short + "/" + s.short, num: num, den: den})
			}
		}
	}
}

func (t *table) note(format string, args ...any) {
	t.notes = append(t.notes, fmt.Sprintf(format, args...))
}

// sec starts a section: the rows added next belong to it.
func (t *table) sec(s string) { t.section = s }

// add adds a row: one value per variant, printed with format ("n/a" for NaN).
func (t *table) add(name, format string, values ...float64) {
	t.rows = append(t.rows, row{section: t.section, name: name, format: format, values: values})
}

// addBounded adds a row whose values may be lower bounds (lower[k]).
func (t *table) addBounded(name, format string, values []float64, lower []bool) {
	t.rows = append(t.rows, row{section: t.section, name: name, format: format, values: values, lower: lower})
}

func (t *table) String() string {
	var sb strings.Builder
	sb.WriteString("svcproxy (compact and kube-proxy rule layouts) vs kube-proxy v1.36.3 (iptables and nftables modes), same lab, same API server, same flags\n")
	for _, n := range t.notes {
		sb.WriteString("  " + n + "\n")
	}
	w := 0
	for _, r := range t.rows {
		w = max(w, len([]rune(r.name)))
	}
	sec := ""
	for _, r := range t.rows {
		if r.section != sec {
			sec = r.section
			fmt.Fprintf(&sb, "\n%s\n  %-*s", sec, w, "metric")
			for _, l := range t.labels {
				fmt.Fprintf(&sb, " %12s", l)
			}
			for _, c := range t.ratios {
				fmt.Fprintf(&sb, " %9s", c.name)
			}
			sb.WriteString("\n")
		}
		fmt.Fprintf(&sb, "  %-*s", w+(len(r.name)-len([]rune(r.name))), r.name)
		for k := range t.labels {
			s := fmtv(r.format, value(r.values, k))
			if r.isLower(k) && s != "n/a" {
				s = ">" + s
			}
			fmt.Fprintf(&sb, " %12s", s)
		}
		for _, c := range t.ratios {
			fmt.Fprintf(&sb, " %9s", r.ratio(c.num, c.den))
		}
		sb.WriteString("\n")
	}
	if len(t.after) > 0 {
		sb.WriteString("\n")
		for _, l := range t.after {
			sb.WriteString(l + "\n")
		}
	}
	return sb.String()
}

func (r row) isLower(k int) bool { return k < len(r.lower) && r.lower[k] }

// ratio is values[num]/values[den]: "-" without both values, ">x" when only
// the numerator is a lower bound, "<x" when only the denominator is, "?"
// when both are.
func (r row) ratio(num, den int) string {
	n, d := value(r.values, num), value(r.values, den)
	if !(n > 0 && d > 0) { // (also true for NaN)
		return "-"
	}
	s := fmt.Sprintf("%.2f", n/d)
	switch {
	case r.isLower(num) && r.isLower(den):
		return "?"
	case r.isLower(num):
		return ">" + s
	case r.isLower(den):
		return "<" + s
	}
	return s
}

// value is values[k], NaN when the row has no value for variant k.
func value(values []float64, k int) float64 {
	if k < len(values) {
		return values[k]
	}
	return math.NaN()
}

func fmtv(format string, v float64) string {
	if v != v {
		return "n/a"
	}
	return fmt.Sprintf(format, v)
}
