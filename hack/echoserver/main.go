// Command echoserver is the backend used by every svcproxy test tier.
//
// It listens on TCP and/or UDP on --port (all addresses) and answers with one
// line "<name> <client-ip>:<client-port>\n": once per TCP connection (then
// closes it) and once per UDP datagram. UDP replies are sent from the address
// the datagram was sent to (IP_PKTINFO), so they match conntrack's
// expectation on multi-homed hosts.
//
// Usage:
//
//	echoserver --name pod-a --port 8080 [--tcp=true] [--udp=true] [--addr 0.0.0.0]
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"net"
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
	addr := flag.String("addr", "0.0.0.0", "IPv4 address to listen on")
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
	hostport := net.JoinHostPort(*addr, strconv.Itoa(*port))
	var wg sync.WaitGroup
	if *doTCP {
		ln, err := net.Listen("tcp4", hostport)
		if err != nil {
			log.Fatal(err)
		}
		go func() { <-ctx.Done(); ln.Close() }()
		wg.Add(1)
		go func() { defer wg.Done(); serveTCP(ln, *name, *verbose) }()
	}
	if *doUDP {
		uc, err := listenUDP(ctx, hostport)
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

func listenUDP(ctx context.Context, hostport string) (*net.UDPConn, error) {
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		if err := c.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IP, syscall.IP_PKTINFO, 1)
		}); err != nil {
			return err
		}
		return serr
	}}
	pc, err := lc.ListenPacket(ctx, "udp4", hostport)
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
		dst := pktinfoDst(oob[:oobn])
		if verbose {
			log.Printf("udp %s -> %v:%d", raddr, net.IP(dst[:]), uc.LocalAddr().(*net.UDPAddr).Port)
		}
		var roob []byte
		if dst != [4]byte{} {
			roob = pktinfoOOB(dst)
		}
		if _, _, err := uc.WriteMsgUDP(reply(name, raddr), roob, raddr); err != nil && verbose {
			log.Printf("udp reply to %s: %v", raddr, err)
		}
	}
}

// pktinfoDst extracts the local (destination) address from IP_PKTINFO.
func pktinfoDst(oob []byte) [4]byte {
	msgs, err := syscall.ParseSocketControlMessage(oob)
	if err != nil {
		return [4]byte{}
	}
	for _, m := range msgs {
		if m.Header.Level == syscall.IPPROTO_IP && m.Header.Type == syscall.IP_PKTINFO &&
			len(m.Data) >= syscall.SizeofInet4Pktinfo {
			pi := (*syscall.Inet4Pktinfo)(unsafe.Pointer(&m.Data[0]))
			return pi.Addr
		}
	}
	return [4]byte{}
}

// pktinfoOOB builds an IP_PKTINFO control message selecting src as source.
func pktinfoOOB(src [4]byte) []byte {
	b := make([]byte, syscall.CmsgSpace(syscall.SizeofInet4Pktinfo))
	h := (*syscall.Cmsghdr)(unsafe.Pointer(&b[0]))
	h.Level = syscall.IPPROTO_IP
	h.Type = syscall.IP_PKTINFO
	h.SetLen(syscall.CmsgLen(syscall.SizeofInet4Pktinfo))
	pi := (*syscall.Inet4Pktinfo)(unsafe.Pointer(&b[syscall.CmsgLen(0)]))
	pi.Spec_dst = src
	return b
}
