package main

import (
	"fmt"
	"math"
	"strings"
)

// table is the report: notes, then rows by section, one value column per
// daemon variant and one ratio column per variant after the first
// (variant / first; above 1 means the first is faster or smaller).
type table struct {
	labels  []string // column headers
	ratios  []string // ratio column headers, e.g. "kp/svp"
	notes   []string
	rows    []row
	section string
}

type row struct {
	section string
	name    string
	format  string
	values  []float64 // one per variant
}

// columns sets the value and ratio columns from the variants.
func (t *table) columns(vs []variant) {
	t.labels, t.ratios = nil, nil
	for k, v := range vs {
		t.labels = append(t.labels, v.label)
		if k > 0 {
			t.ratios = append(t.ratios, v.short+"/"+vs[0].short)
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

func (t *table) String() string {
	var sb strings.Builder
	sb.WriteString("svcproxy vs kube-proxy v1.36.3 (iptables mode), same lab, same API server, same flags\n")
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
			for _, l := range t.ratios {
				fmt.Fprintf(&sb, " %8s", l)
			}
			sb.WriteString("\n")
		}
		fmt.Fprintf(&sb, "  %-*s", w+(len(r.name)-len([]rune(r.name))), r.name)
		for k := range t.labels {
			fmt.Fprintf(&sb, " %12s", fmtv(r.format, value(r.values, k)))
		}
		for k := range t.ratios {
			first, v := value(r.values, 0), value(r.values, k+1)
			ratio := "-"
			if first > 0 && v > 0 { // (also false for NaN)
				ratio = fmt.Sprintf("%.2f", v/first)
			}
			fmt.Fprintf(&sb, " %8s", ratio)
		}
		sb.WriteString("\n")
	}
	return sb.String()
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
