package iptables

import "testing"

// Every registered module is well formed: the parser relies on these
// properties instead of checking them per rule.
func TestMatchModulesAreWellFormed(t *testing.T) {
	for name, m := range matchModules {
		if m.name != name {
			t.Errorf("module %q registered as %q", m.name, name)
		}
		if len(m.options) == 0 || m.setOption == nil {
			t.Errorf("-m %s: no options or no setOption; a module without options matches nothing", name)
		}
		for opt, spec := range m.options {
			if len(opt) < 3 || opt[:2] != "--" {
				t.Errorf("-m %s: option %q does not start with --, so the parser would never offer it", name, opt)
			}
			if spec.values < 0 || spec.values > 2 {
				t.Errorf("-m %s %s: %d values", name, opt, spec.values)
			}
		}
		if m.newMatch != nil && m.newMatch() == m.newMatch() {
			t.Errorf("-m %s: newMatch returns the same Match twice; two uses in one rule would share it", name)
		}
	}
}
