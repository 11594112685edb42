package iptables

import (
	"bytes"
	endian "encoding/binary"
	"errors"
	"fmt"
	"sync"
	"syscall"

	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// kube-proxy's nfacct counters (iptables mode, v1.29 and later). Rules count
// into them with -m nfacct --nfacct-name; the metrics
// kubeproxy_iptables_ct_state_invalid_dropped_packets_total and
// kubeproxy_iptables_localhost_nodeports_accepted_packets_total read them.
const (
	// NFAcctInvalidDropped counts the packets KUBE-FORWARD drops because
	// conntrack found them INVALID.
	NFAcctInvalidDropped = "ct_state_invalid_dropped_pkts"
	// NFAcctLocalhostNodePorts counts the packets accepted on a NodePort at
	// 127.0.0.1.
	NFAcctLocalhostNodePorts = "localhost_nps_accepted_pkts"
)

// KubeProxyNFAcctCounters are the counters kube-proxy makes, in the order it
// makes them (a fresh slice on each call).
func KubeProxyNFAcctCounters() []string {
	return []string{NFAcctInvalidDropped, NFAcctLocalhostNodePorts}
}

// NFAcctNameMax is the longest counter name the kernel takes (NFACCT_NAME_MAX
// is 32 bytes with the terminating NUL).
const NFAcctNameMax = 31

// ErrNoCounter is returned (wrapped) when a counter does not exist.
var ErrNoCounter = errors.New("no such nfacct counter")

// NFAcct manages the kernel's extended accounting objects (nfnetlink_acct)
// of one network namespace: named packet and byte counters that iptables
// rules count into with -m nfacct. A rule that names a missing counter makes
// the whole restore fail, so the counters are made before the rules.
type NFAcct interface {
	// Ensure creates the counter if it does not exist; an existing one keeps
	// its counts.
	Ensure(name string) error
	// Get reads a counter; a missing one is ErrNoCounter.
	Get(name string) (NFAcctCounter, error)
}

// NFAcctCounter is one counter's value.
type NFAcctCounter struct {
	Name           string
	Packets, Bytes uint64
}

// nfnetlink_acct message types and attributes
// (include/uapi/linux/netfilter/nfnetlink_acct.h).
const (
	nfnlMsgAcctNew = 0
	nfnlMsgAcctGet = 1

	nfacctAttrName    = 1
	nfacctAttrPackets = 2
	nfacctAttrBytes   = 3
)

// NewNFAcct returns the NFAcct of network namespace ns ("" means the
// caller's). It checks that the kernel has nfnetlink_acct: without it, an
// error, and the caller counts nothing (as kube-proxy does).
func NewNFAcct(ns string) (NFAcct, error) {
	a := &netlinkNFAcct{ns: ns}
	if _, err := a.Get("svcproxy-probe"); err != nil && !errors.Is(err, ErrNoCounter) {
		return nil, fmt.Errorf("nfacct not available: %w", err)
	}
	return a, nil
}

type netlinkNFAcct struct{ ns string }

func checkNFAcctName(name string) error {
	if name == "" || len(name) > NFAcctNameMax {
		return fmt.Errorf("nfacct counter name %q: want 1 to %d bytes", name, NFAcctNameMax)
	}
	return nil
}

func (a *netlinkNFAcct) Ensure(name string) error {
	if _, err := a.Get(name); err == nil || !errors.Is(err, ErrNoCounter) {
		return err
	}
	// Without NLM_F_REPLACE the kernel leaves an existing counter alone
	// (EBUSY): another writer (the other family's proxier, kube-proxy)
	// may have made it since the Get.
	_, err := a.execute(nfnlMsgAcctNew, unix.NLM_F_CREATE|unix.NLM_F_ACK, name)
	if errors.Is(err, syscall.EBUSY) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("creating nfacct counter %s: %w", name, err)
	}
	return nil
}

func (a *netlinkNFAcct) Get(name string) (NFAcctCounter, error) {
	// A get of one object is answered with one message, then the ack.
	msgs, err := a.execute(nfnlMsgAcctGet, unix.NLM_F_ACK, name)
	if errors.Is(err, syscall.ENOENT) {
		return NFAcctCounter{}, fmt.Errorf("%w: %s", ErrNoCounter, name)
	}
	if err != nil {
		return NFAcctCounter{}, fmt.Errorf("reading nfacct counter %s: %w", name, err)
	}
	for _, m := range msgs {
		c, err := decodeNFAcct(m)
		if err != nil {
			return NFAcctCounter{}, fmt.Errorf("reading nfacct counter %s: %w", name, err)
		}
		if c.Name == name {
			return c, nil
		}
	}
	return NFAcctCounter{}, fmt.Errorf("reading nfacct counter %s: no answer", name)
}

func (a *netlinkNFAcct) execute(msgType, flags int, name string) ([][]byte, error) {
	if err := checkNFAcctName(name); err != nil {
		return nil, err
	}
	req := nl.NewNetlinkRequest(unix.NFNL_SUBSYS_ACCT<<8|msgType, flags)
	req.AddData(&nfgenmsg{family: unix.AF_UNSPEC})
	req.AddData(nl.NewRtAttr(nfacctAttrName, nl.ZeroTerminated(name)))
	closeSock, err := sendFrom(req, a.ns)
	if err != nil {
		return nil, err
	}
	defer closeSock()
	return req.Execute(unix.NETLINK_NETFILTER, 0)
}

// decodeNFAcct reads one nfnetlink_acct message (after its netlink header:
// a 4-byte nfgenmsg, then attributes; the counts are big endian).
func decodeNFAcct(msg []byte) (NFAcctCounter, error) {
	if len(msg) < 4 {
		return NFAcctCounter{}, errors.New("short nfacct message")
	}
	attrs, err := nl.ParseRouteAttr(msg[4:])
	if err != nil {
		return NFAcctCounter{}, err
	}
	var c NFAcctCounter
	seen := 0
	for _, at := range attrs {
		switch at.Attr.Type & nlaTypeMask {
		case nfacctAttrName:
			c.Name = string(bytes.TrimRight(at.Value, "\x00"))
			seen++
		case nfacctAttrPackets, nfacctAttrBytes:
			if len(at.Value) != 8 {
				return NFAcctCounter{}, fmt.Errorf("nfacct attribute %d: %d bytes, want 8", at.Attr.Type, len(at.Value))
			}
			v := endian.BigEndian.Uint64(at.Value)
			if at.Attr.Type&nlaTypeMask == nfacctAttrPackets {
				c.Packets = v
			} else {
				c.Bytes = v
			}
			seen++
		}
	}
	if seen != 3 {
		return NFAcctCounter{}, errors.New("nfacct message without name, packets and bytes")
	}
	return c, nil
}

// FakeNFAcct is an in-memory NFAcct for tests: Ensure creates, Count adds.
type FakeNFAcct struct {
	mu       sync.Mutex
	counters map[string]NFAcctCounter
	// EnsureErr, when set, is returned by every Ensure.
	EnsureErr error
	// Ensured counts Ensure calls.
	Ensured int
}

var _ NFAcct = &FakeNFAcct{}

func (f *FakeNFAcct) Ensure(name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.Ensured++
	if f.EnsureErr != nil {
		return f.EnsureErr
	}
	if err := checkNFAcctName(name); err != nil {
		return err
	}
	if f.counters == nil {
		f.counters = map[string]NFAcctCounter{}
	}
	if _, ok := f.counters[name]; !ok {
		f.counters[name] = NFAcctCounter{Name: name}
	}
	return nil
}

func (f *FakeNFAcct) Get(name string) (NFAcctCounter, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, ok := f.counters[name]
	if !ok {
		return NFAcctCounter{}, fmt.Errorf("%w: %s", ErrNoCounter, name)
	}
	return c, nil
}

// Count adds packets and bytes to an existing counter, as the kernel does
// when a rule matches.
func (f *FakeNFAcct) Count(name string, packets, bytes uint64) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, ok := f.counters[name]
	if !ok {
		return fmt.Errorf("%w: %s", ErrNoCounter, name)
	}
	c.Packets += packets
	c.Bytes += bytes
	f.counters[name] = c
	return nil
}
