// Package rules renders a model.Snapshot into iptables-restore input: a pure
// function of (snapshot, node configuration, options) → bytes. The same
// snapshot and configuration always give byte-identical output.
//
// It owns everything about the shape of the rules and nothing about
// applying them: kube-proxy's chain names (KUBE-SVC/SVL/EXT/FW/SEP built
// from the model's naming hashes), the restore buffer (chains written
// sorted by name, which iptables-nft restores several times faster), the
// local-traffic detectors (-s CIDR, an ipset, -i bridge or prefix), and the
// jumps from built-in chains, which the daemon ensures separately because a
// restore cannot own a built-in chain.
package rules
