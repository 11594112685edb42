package dataplane

import "net/netip"

type netipPrefix = netip.Prefix

func parsePrefix(s string) netip.Prefix { return netip.MustParsePrefix(s) }
