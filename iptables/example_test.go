package iptables_test

import (
	"context"
	"errors"
	"fmt"

	"github.com/svcproxy/svcproxy/iptables"
)

func ExampleFake() {
	ctx := context.Background()
	f := iptables.NewFake(iptables.IPv4)
	err := f.Restore(ctx, []byte(`*nat
:KUBE-SERVICES - [0:0]
:KUBE-SVC-X - [0:0]
-A KUBE-SERVICES -m comment --comment "ns/web:http cluster IP" -p tcp -d 203.0.113.10 --dport 80 -j KUBE-SVC-X
-A KUBE-SVC-X -j KUBE-SEP-GONE
COMMIT
`), iptables.RestoreOptions{NoFlush: true})
	var rerr *iptables.RestoreError
	if errors.As(err, &rerr) {
		fmt.Printf("rejected at line %d:\n%s", rerr.Line, rerr.Lines)
	}
	out, _ := f.Save(ctx, iptables.TableNAT)
	fmt.Print(string(out))
	// Output:
	// rejected at line 5:
	//   2: :KUBE-SERVICES - [0:0]
	//   3: :KUBE-SVC-X - [0:0]
	//   4: -A KUBE-SERVICES -m comment --comment "ns/web:http cluster IP" -p tcp -d 203.0.113.10 --dport 80 -j KUBE-SVC-X
	// > 5: -A KUBE-SVC-X -j KUBE-SEP-GONE
	//   6: COMMIT
	// *nat
	// :PREROUTING ACCEPT [0:0]
	// :INPUT ACCEPT [0:0]
	// :OUTPUT ACCEPT [0:0]
	// :POSTROUTING ACCEPT [0:0]
	// COMMIT
}
