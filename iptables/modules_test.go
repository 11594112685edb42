package iptables

import "testing"

// Every registered match module is well formed: the parser relies on these
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

// Every registered target is well formed, like the modules.
func TestTargetsAreWellFormed(t *testing.T) {
	for name, d := range targets {
		if d.name != name {
			t.Errorf("target %q registered as %q", d.name, name)
		}
		if len(d.options) > 0 && d.setOption == nil {
			t.Errorf("-j %s: options but no setOption", name)
		}
		for opt, spec := range d.options {
			if len(opt) < 3 || opt[:2] != "--" {
				t.Errorf("-j %s: option %q does not start with --, so the parser would never offer it", name, opt)
			}
			if spec.negatable {
				t.Errorf("-j %s %s: negatable, but the parser refuses \"!\" before every target option", name, opt)
			}
			if spec.values < 0 || spec.values > 1 {
				t.Errorf("-j %s %s: %d values", name, opt, spec.values)
			}
		}
	}
}
