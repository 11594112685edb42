package rules

// SetDispatchThreshold lowers the dispatch threshold for a test; the
// returned function restores it.
func SetDispatchThreshold(n int) (restore func()) {
	old := dispatchThreshold
	dispatchThreshold = n
	return func() { dispatchThreshold = old }
}
