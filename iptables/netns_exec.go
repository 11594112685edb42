package iptables

import "context"

// NetnsExecutor runs every command inside a named network namespace
// ("ip netns exec NS ..."). Tests and the lab use it to drive a node
// namespace's tables from outside.
type NetnsExecutor struct {
	Namespace string
	// Next runs the wrapped command; nil means OSExecutor.
	Next Executor
}

var _ Executor = NetnsExecutor{}

// Run implements Executor.
func (e NetnsExecutor) Run(ctx context.Context, name string, args []string, stdin []byte) ([]byte, error) {
	next := e.Next
	if next == nil {
		next = OSExecutor{}
	}
	return next.Run(ctx, "ip", append([]string{"netns", "exec", e.Namespace, name}, args...), stdin)
}

// NetworkNamespace names the namespace the commands run in; the real
// Interface opens its netlink sockets there too.
func (e NetnsExecutor) NetworkNamespace() string { return e.Namespace }

// namespaced is an Executor whose commands run in another network namespace.
type namespaced interface{ NetworkNamespace() string }
