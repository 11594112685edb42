// Command echoserver is the backend used by every svcproxy test tier.
//
// It listens on TCP and/or UDP on --port of --addr (default 0.0.0.0, every
// IPv4 address; an IPv6 address such as "::" listens on IPv6 only) and
// answers with one line "<name> <client-ip>:<client-port>\n" (IPv6 clients
// as "[ip]:port"): once per TCP connection (then closes it) and once per UDP
// datagram. UDP replies are sent from the address the datagram was sent to
// (IP_PKTINFO, IPV6_PKTINFO), so they match conntrack's expectation on
// multi-homed hosts.
//
// Usage:
//
//	echoserver --name pod-a --port 8080 [--tcp=true] [--udp=true] [--addr 0.0.0.0|::]
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"syscall"
	"time"
	"unsafe"
)

func main() {
	host, _ := os.Hostname()
	name := flag.String("name", host, "name reported in every reply")
	port := flag.Int("port", 8080, "port to listen on (TCP and/or UDP)")
	addr := flag.String("addr", "0.0.0.0", "address to listen on: IPv4, or IPv6 (\"::\" = every IPv6 address)")
	doTCP := flag.Bool("tcp", true, "serve TCP")
	doUDP := flag.Bool("udp", true, "serve UDP")
	verbose := flag.Bool("v", false, "log every request to stderr")
	flag.Parse()
	if !*doTCP && !*doUDP {
		log.Fatal("echoserver: nothing to do: both --tcp and --udp are false")
	}
	if *port < 1 || *port > 65535 {
		log.Fatalf("echoserver: bad --port %d", *port)
	}
	log.SetPrefix("echoserver[" + *name + "] ")
	log.SetFlags(log.Ltime | log.Lmicroseconds)

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	ip, err := netip.ParseAddr(*addr)
	if err != nil {
		log.Fatalf("echoserver: bad --addr: %v", err)
	}
	family := "4"
	if !ip.Unmap().Is4() {
		family = "6"
	}
	hostport := net.JoinHostPort(ip.Unmap().String(), strconv.Itoa(*port))
	var wg sync.WaitGroup
	if *doTCP {
		ln, err := net.Listen("tcp"+family, hostport)
		if err != nil {
			log.Fatal(err)
		}
		go func() { <-ctx.Done(); ln.Close() }()
		wg.Add(1)
		go func() { defer wg.Done(); serveTCP(ln, *name, *verbose) }()
	}
	if *doUDP {
		uc, err := listenUDP(ctx, family, hostport)
		if err != nil {
			log.Fatal(err)
		}
		go func() { <-ctx.Done(); uc.Close() }()
		wg.Add(1)
		go func() { defer wg.Done(); serveUDP(uc, *name, *verbose) }()
	}
	log.Printf("listening on %s (tcp=%v udp=%v)", hostport, *doTCP, *doUDP)
	wg.Wait()
}

func reply(name string, from net.Addr) []byte {
	return []byte(fmt.Sprintf("%s %s\n", name, from.String()))
}

func serveTCP(ln net.Listener, name string, verbose bool) {
	for {
		c, err := ln.Accept()
		if err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				continue
			}
			return
		}
		go func(c net.Conn) {
			defer c.Close()
			if verbose {
				log.Printf("tcp %s -> %s", c.RemoteAddr(), c.LocalAddr())
			}
			_ = c.SetWriteDeadline(time.Now().Add(5 * time.Second))
			_, _ = c.Write(reply(name, c.RemoteAddr()))
		}(c)
	}
}

// listenUDP listens on "udp4" or "udp6" (family "4" or "6") asking for the
// destination address of every datagram.
func listenUDP(ctx context.Context, family, hostport string) (*net.UDPConn, error) {
	level, opt := syscall.IPPROTO_IP, syscall.IP_PKTINFO
	if family == "6" {
		level, opt = syscall.IPPROTO_IPV6, syscall.IPV6_RECVPKTINFO
	}
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		if err := c.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), level, opt, 1)
		}); err != nil {
			return err
		}
		return serr
	}}
	pc, err := lc.ListenPacket(ctx, "udp"+family, hostport)
	if err != nil {
		return nil, err
	}
	return pc.(*net.UDPConn), nil
}

func serveUDP(uc *net.UDPConn, name string, verbose bool) {
	buf := make([]byte, 65536)
	oob := make([]byte, 1024)
	for {
		_, oobn, _, raddr, err := uc.ReadMsgUDP(buf, oob)
		if err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				continue
			}
			return
		}
		dst, ifindex, ok := pktinfoDst(oob[:oobn])
		if verbose {
			log.Printf("udp %s -> %v:%d", raddr, dst, uc.LocalAddr().(*net.UDPAddr).Port)
		}
		var roob []byte
		if ok {
			roob = pktinfoOOB(dst, ifindex)
		}
		if _, _, err := uc.WriteMsgUDP(reply(name, raddr), roob, raddr); err != nil && verbose {
			log.Printf("udp reply to %s: %v", raddr, err)
		}
	}
}

// pktinfoDst extracts the local (destination) address and the interface it
// came in on from IP_PKTINFO or IPV6_PKTINFO; ok is false if there is none.
func pktinfoDst(oob []byte) (dst netip.Addr, ifindex uint32, ok bool) {
	msgs, err := syscall.ParseSocketControlMessage(oob)
	if err != nil {
		return netip.Addr{}, 0, false
	}
	for _, m := range msgs {
		switch {
		case m.Header.Level == syscall.IPPROTO_IP && m.Header.Type == syscall.IP_PKTINFO &&
			len(m.Data) >= syscall.SizeofInet4Pktinfo:
			pi := (*syscall.Inet4Pktinfo)(unsafe.Pointer(&m.Data[0]))
			return netip.AddrFrom4(pi.Addr), 0, pi.Addr != [4]byte{}
		case m.Header.Level == syscall.IPPROTO_IPV6 && m.Header.Type == syscall.IPV6_PKTINFO &&
			len(m.Data) >= syscall.SizeofInet6Pktinfo:
			pi := (*syscall.Inet6Pktinfo)(unsafe.Pointer(&m.Data[0]))
			return netip.AddrFrom16(pi.Addr), pi.Ifindex, pi.Addr != [16]byte{}
		}
	}
	return netip.Addr{}, 0, false
}

// pktinfoOOB builds an IP_PKTINFO (IPV6_PKTINFO) control message selecting
// src as the source address. A link-local IPv6 source also needs its
// interface; other replies leave the interface to the routing table.
func pktinfoOOB(src netip.Addr, ifindex uint32) []byte {
	if src.Is4() {
		b := make([]byte, syscall.CmsgSpace(syscall.SizeofInet4Pktinfo))
		h := (*syscall.Cmsghdr)(unsafe.Pointer(&b[0]))
		h.Level = syscall.IPPROTO_IP
		h.Type = syscall.IP_PKTINFO
		h.SetLen(syscall.CmsgLen(syscall.SizeofInet4Pktinfo))
		pi := (*syscall.Inet4Pktinfo)(unsafe.Pointer(&b[syscall.CmsgLen(0)]))
		pi.Spec_dst = src.As4()
		return b
	}
	b := make([]byte, syscall.CmsgSpace(syscall.SizeofInet6Pktinfo))
	h := (*syscall.Cmsghdr)(unsafe.Pointer(&b[0]))
	h.Level = syscall.IPPROTO_IPV6
	h.Type = syscall.IPV6_PKTINFO
	h.SetLen(syscall.CmsgLen(syscall.SizeofInet6Pktinfo))
	pi := (*syscall.Inet6Pktinfo)(unsafe.Pointer(&b[syscall.CmsgLen(0)]))
	pi.Addr = src.As16()
	if src.IsLinkLocalUnicast() {
		pi.Ifindex = ifindex
	}
	return b
}
