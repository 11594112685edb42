package rules

// SetDispatchThreshold lowers the dispatch threshold for a test; the
// returned function restores it.
func SetDispatchThreshold(n int) (restore func()) {
	old := dispatchThreshold
	dispatchThreshold = n
	return func() { dispatchThreshold = old }
}

// SetNFTOrder turns the compact layout's iptables-nft chain order on or off
// for a test; the returned function restores it.
func SetNFTOrder(on bool) (restore func()) {
	old := writeForNFT
	writeForNFT = on
	return func() { writeForNFT = old }
}
