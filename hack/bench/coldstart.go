package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/svcproxy/svcproxy/hack/lab"
)

// a. cold start: the daemons start one at a time (the ones started before
// stay up, idle) with every Service already in the API; process start →
// every rule programmed (the daemon's first IPv6 sync after the start has
// ended and the first and last bench Services' chains list all their
// endpoints). A daemon not done within cfg.Cap is stopped and reported as
// "> cap" (a lower bound); it takes no part in the later measurements.
func (b *bench) coldStart(ctx context.Context) error {
	n := len(b.ds)
	wall, full, cpu, nat := nans(n), nans(n), nans(n), nans(n)
	capped := make([]bool, n)
	for _, k := range startOrder(variants(b.cfg)) {
		d := b.ds[k]
		if err := b.start(d); err != nil {
			return err
		}
		var m map[string]float64
		err := lab.Poll(ctx, b.cfg.Cap, 200*time.Millisecond, func() error {
			if exited, werr := d.proc.Exited(); exited {
				return fmt.Errorf("%w: %s exited: %v\n%s", lab.ErrStop, d.label, werr, d.proc.LogTail(3000))
			}
			if err := b.programmed(ctx, d); err != nil {
				return err
			}
			var err error
			m, err = b.metrics(ctx, d)
			return err
		})
		c, _ := procStats(d.proc.Pid())
		switch {
		case err == nil:
			d.running = true
			wall[k] = m[lastSync] - unix(d.start)
			full[k] = m[fullSync+"_sum"] / m[fullSync+"_count"]
			if !d.nft {
				nat[k] = m[natRulesByTable]
			}
			cpu[k] = c
			logf("%s on %s: programmed %.2fs after exec (full sync %.2fs, CPU %.2fs)", d.label, d.node.Name, wall[k], full[k], c)
		case ctx.Err() != nil:
			return ctx.Err()
		case errors.Is(err, lab.ErrStop):
			return err
		default:
			logf("%s on %s: not programmed within %s (%v); stopped\n%s", d.label, d.node.Name, b.cfg.Cap, err, d.proc.LogTail(1500))
			d.stop()
			wall[k], cpu[k], capped[k] = b.cfg.Cap.Seconds(), c, true
		}
	}
	b.res.cold, b.res.coldCapped, b.res.fullSync = wall, capped, full
	t := b.results
	t.sec(fmt.Sprintf("a. cold start with %d Services in the API: daemons started one at a time (the others idle)", b.cfg.N))
	t.addBounded("process start → rules programmed (s)", "%.2f", wall, capped)
	t.add("full sync duration (kubeproxy_sync_full_proxy_rules_duration_seconds) (s)", "%.2f", full...)
	t.addBounded("CPU until programmed, incl. iptables-restore / nft (s)", "%.2f", cpu, capped)
	t.add("ip6 nat rules (kubeproxy_sync_proxy_rules_iptables_total{table=nat})", "%.0f", nat...)
	if !b.cfg.Restore {
		return nil
	}
	return b.bareRestore(ctx)
}

// bareRestore times a bare `ip6tables-restore` of each svcproxy layout's
// full text (`svcproxy dump --jumps`, from the cluster's objects as the API
// holds them, for that variant's node) into an empty scratch namespace:
// what the kernel and iptables-nft alone cost for that text.
func (b *bench) bareRestore(ctx context.Context) error {
	dir, err := os.MkdirTemp("", "svpbench")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	manifests := filepath.Join(dir, "objects.json")
	if err := b.writeObjects(ctx, manifests); err != nil {
		return err
	}
	secs, sizes := nans(len(b.ds)), nans(len(b.ds))
	for k, d := range b.ds {
		if !d.svcproxy {
			continue
		}
		text := filepath.Join(dir, d.label+".rules")
		if err := b.dump(ctx, d, manifests, text); err != nil {
			return err
		}
		if st, err := os.Stat(text); err == nil {
			sizes[k] = float64(st.Size()) / (1 << 20)
		}
		took, err := restoreInScratch(ctx, b.cfg.Prefix+"-scratch", text, b.cfg.Cap)
		if err != nil {
			logf("bare restore of %s's text: %v", d.label, err)
			continue
		}
		secs[k] = took.Seconds()
		logf("bare ip6tables-restore of %s's text (%.1f MiB): %.2fs", d.label, sizes[k], secs[k])
	}
	b.res.bare = secs
	t := b.results
	t.add("`svcproxy dump --jumps` text (MiB)", "%.1f", sizes...)
	t.add("bare ip6tables-restore of that text into an empty namespace (s)", "%.2f", secs...)
	return nil
}

// writeObjects writes the bench namespace's Services and EndpointSlices and
// the Node objects, as one v1 List, for `svcproxy dump -f`.
func (b *bench) writeObjects(ctx context.Context, path string) error {
	svcs, err := b.cs.CoreV1().Services(kns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	sls, err := b.cs.DiscoveryV1().EndpointSlices(kns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	nodes, err := b.cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	var items []any
	for i := range svcs.Items {
		o := &svcs.Items[i]
		o.APIVersion, o.Kind = "v1", "Service"
		items = append(items, o)
	}
	for i := range sls.Items {
		o := &sls.Items[i]
		o.APIVersion, o.Kind = "discovery.k8s.io/v1", "EndpointSlice"
		items = append(items, o)
	}
	for i := range nodes.Items {
		o := &nodes.Items[i]
		o.APIVersion, o.Kind = "v1", "Node"
		items = append(items, o)
	}
	data, err := json.Marshal(map[string]any{"apiVersion": "v1", "kind": "List", "items": items})
	if err != nil {
		return err
	}
	return os.WriteFile(path, data, 0o644)
}

// dump writes `svcproxy dump --jumps` for d's node and layout to out.
func (b *bench) dump(ctx context.Context, d *daemon, manifests, out string) error {
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	defer f.Close()
	layout := "compact"
	for _, a := range d.argv {
		if a == "--rule-layout=kube-proxy" {
			layout = "kube-proxy"
		}
	}
	cmd := exec.CommandContext(ctx, b.cfg.Svcproxy, "dump", "-f", manifests, "--jumps", "--node-name", d.node.Name,
		"--ip-family", "ipv6", "--cluster-cidr", lab.PodNetwork6, "--rule-layout", layout)
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = f, &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("svcproxy dump: %w: %s", err, stderr.String())
	}
	return f.Close()
}

// restoreInScratch creates namespace ns, times `ip6tables-restore` of text
// in it (bounded by bound) and deletes the namespace.
func restoreInScratch(ctx context.Context, ns, text string, bound time.Duration) (time.Duration, error) {
	_ = exec.Command("ip", "netns", "del", ns).Run() // left over from a killed run
	if out, err := exec.CommandContext(ctx, "ip", "netns", "add", ns).CombinedOutput(); err != nil {
		return 0, fmt.Errorf("ip netns add %s: %w: %s", ns, err, out)
	}
	defer func() {
		if out, err := exec.Command("ip", "netns", "del", ns).CombinedOutput(); err != nil {
			logf("ip netns del %s: %v: %s", ns, err, out)
		}
	}()
	in, err := os.Open(text)
	if err != nil {
		return 0, err
	}
	defer in.Close()
	rctx, cancel := context.WithTimeout(ctx, bound)
	defer cancel()
	cmd := exec.CommandContext(rctx, "ip", "netns", "exec", ns, "ip6tables-restore")
	cmd.Stdin = in
	start := time.Now()
	out, err := cmd.CombinedOutput()
	took := time.Since(start)
	if err != nil {
		return took, fmt.Errorf("ip6tables-restore: %w: %s", err, out)
	}
	return took, nil
}

// resources: each running daemon's RSS and CPU since its start, after
// every other measurement.
func (b *bench) resources(context.Context) error {
	rss, cpu := nans(len(b.ds)), nans(len(b.ds))
	for k, d := range b.ds {
		if d.running {
			c, r := procStats(d.proc.Pid())
			cpu[k], rss[k] = c, r/1024
		}
	}
	b.res.rss = rss
	t := b.results
	t.sec("d. resources (at the end: after the cold start, the updates and the connections)")
	t.add("daemon RSS (MiB)", "%.0f", rss...)
	t.add("daemon CPU since its start, incl. iptables-restore / nft (s)", "%.2f", cpu...)
	return nil
}
