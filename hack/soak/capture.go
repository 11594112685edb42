package main

import (
	"fmt"
	"os/exec"
	"path/filepath"
)

// A capture is one recorder the soak runs for -capture: its namespace, the
// name of its output in the logs directory and its command line (a
// tcpdump's -w argument is that name; a recorder writing to stdout has it
// as its log, name + ".log").
type capture struct {
	ns, name string
	argv     []string
}

// captures lists the recorders of -capture, for a post-mortem of a wrong
// answer (a timeout tells nothing of where the packets went):
//   - on each node's pod bridge, every TCP handshake, FIN and RST and every
//     ICMP message: where a SYN was DNATed to and whether anything answered;
//   - in each probing pod, every TCP and UDP packet and ICMP message: what
//     the client sent and got (a read timeout and a dial timeout differ);
//   - each node's conntrack events with timestamps: the NAT bindings and
//     their states (a SYN's retransmissions reuse its first binding).
//
// Bounded in size: tcpdump rotates at 100 MB and keeps the last 3 files.
func captures(nodes []*node, dir string) []capture {
	tcpdump := func(ns, iface, name, filter string) capture {
		return capture{ns: ns, name: name, argv: []string{
			"tcpdump", "-i", iface, "-n", "-U", "-Z", "root", "-C", "100", "-W", "3",
			"-w", filepath.Join(dir, name), filter,
		}}
	}
	var out []capture
	for _, nd := range nodes {
		pod := nd.n.Pods[0] // the probing pod (see targets)
		out = append(out,
			tcpdump(nd.n.NS, "cbr0", "capture-"+nd.n.Name+"-cbr0.pcap",
				"(tcp[tcpflags] & (tcp-syn|tcp-fin|tcp-rst) != 0) or icmp or icmp6"),
			tcpdump(pod.NS, "eth0", "capture-"+pod.Name+"-eth0.pcap", "tcp or udp or icmp or icmp6"),
			capture{ns: nd.n.NS, name: "capture-" + nd.n.Name + "-conntrack",
				argv: []string{"conntrack", "-E", "-o", "timestamp"}},
		)
	}
	return out
}

// startCaptures starts the recorders of captures in the lab's logs
// directory; teardown stops them.
func (s *soak) startCaptures() error {
	for _, tool := range []string{"tcpdump", "conntrack"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("-capture needs %s on PATH (Debian: apt-get install %s): %w", tool, tool, err)
		}
	}
	dir := filepath.Join(s.l.StateDir, "logs")
	for _, c := range captures(s.nodes, dir) {
		logName := c.name
		if c.argv[0] == "tcpdump" {
			logName += ".tcpdump" // its own messages
		}
		p, err := s.l.StartProcess(c.ns, logName, c.argv...)
		if err != nil {
			return fmt.Errorf("capture %s in %s: %w", c.name, c.ns, err)
		}
		s.capturing = append(s.capturing, p)
	}
	logf("capturing packets and conntrack events into %s (capture-*)", dir)
	return nil
}
