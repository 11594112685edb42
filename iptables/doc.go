// Package iptables is svcproxy's small window onto iptables.
//
// It has four parts, one idea per file:
//
//   - a model of iptables-save / iptables-restore text (Dump, TableDump,
//     Chain, Rule) and a parser for both (ParseDump, ParseRestore), plus
//     ParseRuleArgs, which turns a rule's arguments into a typed RuleSpec so
//     that nothing downstream has to re-interpret strings (each -m module it
//     knows is one definition in modules.go, each target one in targets.go;
//     those of other software's rules — CNI plugins, Docker, firewalls — in
//     modules_more.go and targets_more.go);
//   - Interface, the handful of operations the proxier needs, with a real
//     implementation (New) over a tiny exec seam (Executor);
//   - Fake, a stateful in-memory Interface that applies restore input with
//     the same semantics as iptables-restore, and can dump canonical text;
//   - sub-package trace, which walks a packet through a Dump.
//
// IPv4 and IPv6 are two instances of the same code: only the binary names
// differ (see Family).
package iptables
