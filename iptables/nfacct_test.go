package iptables

import (
	endian "encoding/binary"
	"errors"
	"strings"
	"testing"

	"github.com/vishvananda/netlink/nl"
)

// nfacctMessage builds what the kernel sends for one counter: nfgenmsg,
// then name, packets and bytes attributes.
func nfacctMessage(name string, packets, bytes uint64) []byte {
	msg := []byte{0, 0, 0, 0}
	be := func(v uint64) []byte { return endian.BigEndian.AppendUint64(nil, v) }
	for _, a := range []*nl.RtAttr{
		nl.NewRtAttr(nfacctAttrName, nl.ZeroTerminated(name)),
		nl.NewRtAttr(nfacctAttrPackets, be(packets)),
		nl.NewRtAttr(nfacctAttrBytes, be(bytes)),
		nl.NewRtAttr(4, []byte{0, 0, 0, 1}), // NFACCT_USE: ignored
	} {
		msg = append(msg, a.Serialize()...)
	}
	return msg
}

func TestDecodeNFAcct(t *testing.T) {
	c, err := decodeNFAcct(nfacctMessage(NFAcctLocalhostNodePorts, 7, 420))
	if err != nil {
		t.Fatal(err)
	}
	if c != (NFAcctCounter{Name: NFAcctLocalhostNodePorts, Packets: 7, Bytes: 420}) {
		t.Errorf("decoded %+v", c)
	}
	if _, err := decodeNFAcct([]byte{0, 0}); err == nil {
		t.Error("a 2-byte message decoded")
	}
	noCounts := append([]byte{0, 0, 0, 0}, nl.NewRtAttr(nfacctAttrName, nl.ZeroTerminated("x")).Serialize()...)
	if _, err := decodeNFAcct(noCounts); err == nil {
		t.Error("a message without counts decoded")
	}
}

func TestNFAcctNames(t *testing.T) {
	for _, name := range []string{"", strings.Repeat("a", NFAcctNameMax+1)} {
		if err := checkNFAcctName(name); err == nil {
			t.Errorf("name %q accepted", name)
		}
	}
	for _, name := range []string{NFAcctInvalidDropped, NFAcctLocalhostNodePorts, strings.Repeat("a", NFAcctNameMax)} {
		if err := checkNFAcctName(name); err != nil {
			t.Errorf("name %q: %v", name, err)
		}
	}
}

func TestFakeNFAcct(t *testing.T) {
	f := &FakeNFAcct{}
	if _, err := f.Get("c"); !errors.Is(err, ErrNoCounter) {
		t.Fatalf("Get of a missing counter: %v, want ErrNoCounter", err)
	}
	if err := f.Count("c", 1, 1); !errors.Is(err, ErrNoCounter) {
		t.Fatalf("Count into a missing counter: %v, want ErrNoCounter", err)
	}
	if err := f.Ensure("c"); err != nil {
		t.Fatal(err)
	}
	if err := f.Count("c", 2, 120); err != nil {
		t.Fatal(err)
	}
	if err := f.Ensure("c"); err != nil { // keeps the counts
		t.Fatal(err)
	}
	if c, err := f.Get("c"); err != nil || c.Packets != 2 || c.Bytes != 120 {
		t.Errorf("Get: %+v, %v; want 2 packets, 120 bytes", c, err)
	}
}
