package main

import (
	"fmt"
	"runtime"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// target is the bound on svcproxy's restart, as a fraction of
// kube-proxy nftables' restart (case a).
const target = 0.2

// report is the table: one row per case, then the notes.
func (r *runner) report() string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "bignode: start and restart over a big table — N=%d single-stack IPv6 ClusterIP Services × %d endpoints (+1 probe Service)\n", r.cfg.N, r.cfg.M)
	fmt.Fprintf(&sb, "%s, %d CPUs, kernel %s, load (1/5/15 min) before %s, after %s; %d Services + slices created in %s\n",
		r.started.UTC().Format("2006-01-02 15:04 UTC"), runtime.NumCPU(), r.kernel, r.loadBefore, r.loadAfter, r.cfg.N, r.created.Round(time.Second))
	fmt.Fprintf(&sb, "served = process start → a connection from a pod of that node to the probe Service reaches the endpoint the probe Service was moved to at the start\n")
	fmt.Fprintf(&sb, "within one full sync = served no later than 1 s (probe granularity) after the first full sync of that process ended\n")

	// The baseline: kube-proxy's restart (the median of the a rows).
	var as []time.Duration
	for _, res := range r.results {
		if res.id == "a" || strings.HasPrefix(res.id, "a#") {
			if res.served > 0 {
				as = append(as, res.served)
			}
		}
	}
	var a time.Duration
	if len(as) > 0 {
		slices.Sort(as)
		a = (as[(len(as)-1)/2] + as[len(as)/2]) / 2
		fmt.Fprintf(&sb, "/a = served / %.1fs, kube-proxy's restart (case a; median of %d)\n", a.Seconds(), len(as))
	}
	sb.WriteString("\n")
	tw := tabwriter.NewWriter(&sb, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "case\twhat\tserved (s)\t/a (target ≤ 0.2)\tfirst full sync (s)\tstart → its end (s)\twithin one full sync\tstale chains 0 (s)\tload at start")
	for _, res := range r.results {
		served, ratio, within := "-", "-", res.err
		if res.served > 0 {
			served = fmt.Sprintf("%.1f", res.served.Seconds())
			if a > 0 {
				x := res.served.Seconds() / a.Seconds()
				ratio = fmt.Sprintf("%.2f", x)
				if res.id[0] != 'a' && res.id != "ref" {
					if x <= target {
						ratio += " met"
					} else {
						ratio += " MISSED"
					}
				}
			}
			switch {
			case res.syncEnd == 0:
				within = "? (no sync seen)"
			case res.served <= res.syncEnd+time.Second:
				within = "yes"
			default:
				within = fmt.Sprintf("no (%.1fs after)", (res.served - res.syncEnd).Seconds())
			}
		}
		first, end, stale := "-", "-", "-"
		if res.firstSync > 0 {
			first = fmt.Sprintf("%.1f", res.firstSync)
		}
		if res.syncEnd > 0 {
			end = fmt.Sprintf("%.1f", res.syncEnd.Seconds())
		}
		if res.staleZero > 0 {
			stale = fmt.Sprintf("%.1f", res.staleZero.Seconds())
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", res.id, res.label, served, ratio, first, end, within, stale, firstField(res.load))
	}
	_ = tw.Flush()

	sb.WriteString("\nper case: what the probe reached just before the start; the slice update's return; svcproxy's \"Synced all proxy rules\" lines (IPv6, this process)\n")
	for _, res := range r.results {
		fmt.Fprintf(&sb, "  %s: before: %s; change made %.2fs after the start\n", res.id, res.before, res.changeAt.Seconds())
		for _, l := range res.syncLines {
			fmt.Fprintf(&sb, "      %s\n", l)
		}
	}
	if len(r.notes) > 0 {
		sb.WriteString("\nnotes:\n")
		for _, n := range r.notes {
			fmt.Fprintf(&sb, "  %s\n", n)
		}
	}
	return sb.String()
}

func firstField(s string) string {
	if f := strings.Fields(s); len(f) > 0 {
		return f[0]
	}
	return s
}
