package conntrack

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

type fakeSysctls struct {
	values map[string]int
	writes []string
	fail   map[string]error
}

func (f *fakeSysctls) Get(name string) (int, error) {
	v, ok := f.values[name]
	if !ok {
		return 0, errors.New("no such sysctl")
	}
	return v, nil
}

func (f *fakeSysctls) Set(name string, value int) error {
	if err := f.fail[name]; err != nil {
		return err
	}
	f.values[name] = value
	f.writes = append(f.writes, name)
	return nil
}

func TestMax(t *testing.T) {
	for _, c := range []struct {
		s    Settings
		cpus int
		want int
	}{
		{Settings{MaxPerCore: 0, Min: 131072}, 4, 0},
		{Settings{MaxPerCore: 32768, Min: 131072}, 2, 131072},
		{Settings{MaxPerCore: 32768, Min: 131072}, 8, 262144},
		{Settings{MaxPerCore: 32768}, 64, maxConntrackLimit},
	} {
		if got := Max(c.s, c.cpus); got != c.want {
			t.Errorf("Max(%+v, %d cpus) = %d, want %d", c.s, c.cpus, got, c.want)
		}
	}
}

func TestSetSysctlsWritesOnlyDifferences(t *testing.T) {
	sys := &fakeSysctls{values: map[string]int{
		"net/netfilter/nf_conntrack_max": 131072,
		hashsizeParam:                    16384,
		"net/netfilter/nf_conntrack_tcp_timeout_established": 86400,
		"net/netfilter/nf_conntrack_tcp_timeout_close_wait":  3600,
		"net/netfilter/nf_conntrack_udp_timeout":             30,
		"net/netfilter/nf_conntrack_tcp_be_liberal":          0,
	}}
	s := Settings{MaxPerCore: 32768, Min: 131072, TCPEstablishedTimeout: 24 * time.Hour, TCPCloseWaitTimeout: time.Hour, UDPTimeout: 30 * time.Second, TCPBeLiberal: true}
	if err := SetSysctls(context.Background(), sys, s, 8); err != nil {
		t.Fatal(err)
	}
	want := []string{"net/netfilter/nf_conntrack_max", hashsizeParam, "net/netfilter/nf_conntrack_tcp_be_liberal"}
	if strings.Join(sys.writes, ",") != strings.Join(want, ",") {
		t.Errorf("writes = %v, want %v", sys.writes, want)
	}
	if sys.values["net/netfilter/nf_conntrack_max"] != 262144 || sys.values[hashsizeParam] != 65536 {
		t.Errorf("max/hashsize = %d/%d, want 262144/65536", sys.values["net/netfilter/nf_conntrack_max"], sys.values[hashsizeParam])
	}
}

func TestSetSysctlsNamesTheFailingSetting(t *testing.T) {
	sys := &fakeSysctls{values: map[string]int{"net/netfilter/nf_conntrack_max": 65536},
		fail: map[string]error{"net/netfilter/nf_conntrack_max": errors.New("read-only file system")}}
	err := SetSysctls(context.Background(), sys, Settings{MaxPerCore: 32768, Min: 131072}, 2)
	if err == nil || !strings.Contains(err.Error(), "sysctl net.netfilter.nf_conntrack_max=131072") {
		t.Fatalf("want an error naming net.netfilter.nf_conntrack_max=131072, got %v", err)
	}
	if err := SetSysctls(context.Background(), sys, Settings{MaxPerCore: 0}, 2); err != nil {
		t.Fatalf("--conntrack-max-per-core=0 must leave nf_conntrack_max alone: %v", err)
	}
}
