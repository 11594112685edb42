package trace

import (
	"os"
	"os/exec"
	"slices"
	"testing"

	"github.com/svcproxy/svcproxy/hack/testns"
	"github.com/svcproxy/svcproxy/iptables"
)

// TestTraceRealSave traces through what real iptables-save prints after
// loading the sample ruleset (the kernel round trip rewrites rules: --or-mark
// becomes --set-xmark, /32 is added, -m tcp moves), in a throwaway network
// namespace (hack/testns; skips where one cannot be made).
func TestTraceRealSave(t *testing.T) {
	testns.Require(t)
	for _, be := range []iptables.Backend{iptables.BackendNFT, iptables.BackendLegacy} {
		t.Run(string(be), func(t *testing.T) {
			bin := "iptables-" + string(be) + "-restore"
			if _, err := exec.LookPath(bin); err != nil {
				t.Skipf("skipping: %s not installed", bin)
			}
			ns := testns.New(t).Name
			ipt, err := iptables.New(iptables.NetnsExecutor{Namespace: ns}, iptables.Options{Backend: be})
			if err != nil {
				t.Fatal(err)
			}
			sample, err := os.ReadFile("../testdata/kube-proxy-v4.txt")
			if err != nil {
				t.Fatal(err)
			}
			if err := ipt.Restore(t.Context(), sample, iptables.RestoreOptions{}); err != nil {
				t.Fatal(err)
			}
			var saved []byte
			for _, table := range []iptables.Table{iptables.TableFilter, iptables.TableNAT} {
				out, err := ipt.Save(t.Context(), table)
				if err != nil {
					t.Fatal(err)
				}
				saved = append(saved, out...)
			}
			live, err := iptables.ParseDump(saved)
			if err != nil {
				t.Fatal(err)
			}
			fromText := loadDump(t, "../testdata/kube-proxy-v4.txt")
			for _, pkt := range []Packet{
				tcpPort("192.0.2.1", "203.0.113.10", 80, Local),
				tcpPort("198.51.100.2", "203.0.113.10", 80, Incoming),
				tcpPort("203.0.113.99", "192.0.2.1", 30080, Incoming),
				tcpPort("198.51.100.7", "203.0.113.11", 80, Incoming),
				tcpPort("198.51.100.7", "203.0.113.20", 80, Incoming),
				tcpPort("203.0.113.99", "192.0.2.1", 30081, Incoming),
			} {
				want, err := Trace(fromText, v4Ctx, pkt)
				if err != nil {
					t.Fatal(err)
				}
				got, err := Trace(live, v4Ctx, pkt)
				if err != nil {
					t.Fatalf("tracing %+v through live rules: %v", pkt, err)
				}
				if !slices.Equal(summary(got), summary(want)) {
					t.Errorf("%+v: live %q, text %q", pkt, summary(got), summary(want))
				}
			}
		})
	}
}
