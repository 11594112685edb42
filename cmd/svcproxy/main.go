// Command svcproxy is a drop-in replacement for kube-proxy in iptables mode.
package main

import (
	"os"

	"github.com/svcproxy/svcproxy/cmd/svcproxy/app"
)

func main() {
	os.Exit(app.Main(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}
