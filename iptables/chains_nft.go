package iptables

import (
	"bytes"
	"errors"
	"fmt"
	"runtime"

	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// listChainsNetlink lists the chains of one table of iptables-nft (nf_tables
// table "nat" of family ip or ip6, and so on) with a single netlink dump of
// chains, rules left out, in network namespace ns ("" means the caller's).
// Built-in chains appear only once something created them (iptables-nft
// creates them on first use).
//
// Why not iptables-nft-save: on a table of 110,000 chains it runs for minutes
// and then crashes (iptables 1.8.9). A dump of chains only answers in about a
// second. It reads with 64 KiB buffers, so the kernel sends 32 KiB batches: the
// kernel restarts a chain dump from the start of the table for every batch,
// and small batches (as github.com/google/nftables reads) make that several
// times slower.
func listChainsNetlink(family Family, table Table, ns string) ([]string, error) {
	proto := uint8(unix.NFPROTO_IPV4)
	if family == IPv6 {
		proto = unix.NFPROTO_IPV6
	}
	req := nl.NewNetlinkRequest(unix.NFNL_SUBSYS_NFTABLES<<8|unix.NFT_MSG_GETCHAIN, unix.NLM_F_DUMP)
	req.AddData(&nfgenmsg{family: proto})
	closeSock, err := sendFrom(req, ns)
	if err != nil {
		return nil, err
	}
	defer closeSock()
	var names []string
	var parseErr error
	err = req.ExecuteIter(unix.NETLINK_NETFILTER, 0, func(msg []byte) bool {
		inTable, name, err := chainOf(msg)
		if err != nil {
			parseErr = err
			return false
		}
		if inTable == string(table) && name != "" {
			names = append(names, name)
		}
		return true
	})
	if errors.Is(err, unix.ENOENT) {
		return nil, nil // no such table: no chains
	}
	if err != nil {
		return nil, fmt.Errorf("netlink dump of nf_tables chains of %s %s: %w", family, table, err)
	}
	if parseErr != nil {
		return nil, fmt.Errorf("netlink dump of nf_tables chains of %s %s: %w", family, table, parseErr)
	}
	return names, nil
}

// sendFrom makes req go through a netfilter netlink socket in network
// namespace ns ("" means the caller's: req opens its own). Call the returned
// function when req is done.
func sendFrom(req *nl.NetlinkRequest, ns string) (func(), error) {
	if ns == "" {
		return func() {}, nil
	}
	sock, closeSock, err := socketIn(ns)
	if err != nil {
		return nil, err
	}
	req.Sockets = map[int]*nl.SocketHandle{unix.NETLINK_NETFILTER: {Socket: sock}}
	return closeSock, nil
}

// socketIn opens a netfilter netlink socket inside network namespace ns.
func socketIn(ns string) (*nl.NetlinkSocket, func(), error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	target, err := netns.GetFromName(ns)
	if err != nil {
		return nil, nil, fmt.Errorf("network namespace %s: %w", ns, err)
	}
	defer target.Close()
	cur, err := netns.Get()
	if err != nil {
		return nil, nil, err
	}
	defer cur.Close()
	sock, err := nl.GetNetlinkSocketAt(target, cur, unix.NETLINK_NETFILTER)
	if err != nil {
		return nil, nil, fmt.Errorf("netlink socket in %s: %w", ns, err)
	}
	return sock, sock.Close, nil
}

// nfgenmsg is the netfilter netlink header of every nf_tables message.
type nfgenmsg struct{ family uint8 }

func (m *nfgenmsg) Len() int { return 4 }

func (m *nfgenmsg) Serialize() []byte {
	return []byte{m.family, unix.NFNETLINK_V0, 0, 0} // res_id 0, big endian
}

// chainOf reads the table and chain names of one NFT_MSG_NEWCHAIN message
// (after its netlink header: a 4-byte nfgenmsg, then attributes). The
// kernel dumps the chains of every table of the family; the caller keeps
// its table's.
func chainOf(msg []byte) (table, chain string, err error) {
	if len(msg) < 4 {
		return "", "", errors.New("short nf_tables message")
	}
	attrs, err := nl.ParseRouteAttr(msg[4:])
	if err != nil {
		return "", "", err
	}
	for _, a := range attrs {
		switch a.Attr.Type & nlaTypeMask {
		case unix.NFTA_CHAIN_TABLE:
			table = string(bytes.TrimRight(a.Value, "\x00"))
		case unix.NFTA_CHAIN_NAME:
			chain = string(bytes.TrimRight(a.Value, "\x00"))
		}
	}
	return table, chain, nil
}

// nlaTypeMask strips the nested and byte-order flags from an attribute type.
const nlaTypeMask = ^uint16(unix.NLA_F_NESTED | unix.NLA_F_NET_BYTEORDER)
