// Package dataplane holds svcproxy's dataplane tests: rendered rules are
// applied with the real iptables-restore inside network namespaces the tests
// create, and real TCP and UDP traffic is checked against echo backends.
// They need root and skip, saying why, where namespaces cannot be made.
package dataplane
