package ipset

import (
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"

	"k8s.io/klog/v2"
)

// Desired is the state SyncSets brings one set to. An empty Family means IPv4.
type Desired struct {
	Type    SetType
	Family  Family
	Comment string
	Members []netip.Prefix
}

// SyncSets brings every set in desired (keyed by set name) to its desired state: it creates the
// set if it is missing (including one someone destroyed since the last sync) and atomically
// replaces its members if they differ. It never touches sets not in desired; see Cleanup for
// that. Sets are handled in name order; a failing set does not stop the others, and the returned
// error joins every set's error (each names its set), so errors.Is works on any of them.
func SyncSets(iface Interface, desired map[string]Desired) error {
	var errs []error
	for _, name := range slices.Sorted(maps.Keys(desired)) {
		errs = append(errs, syncSet(iface, name, desired[name]))
	}
	return errors.Join(errs...)
}

func syncSet(iface Interface, name string, d Desired) error {
	set := Set{Name: name, Type: d.Type, Family: d.Family, Comment: d.Comment}
	// Two attempts: a set destroyed between EnsureSet and ReplaceMembers is created again.
	var err error
	for range 2 {
		if err = iface.EnsureSet(set); err != nil {
			return err
		}
		if err = iface.ReplaceMembers(name, d.Members); !errors.Is(err, ErrNotFound) {
			return err
		}
	}
	return err
}

// Cleanup destroys every set whose name starts with prefix (such as Prefix, or "KUBE-" to remove
// kube-proxy's sets), including temporary sets an interrupted replace left behind. A set the
// kernel reports in use (ErrInUse: an iptables rule still references it) is skipped with a logged
// error and does not make Cleanup fail, so call it again after the rules are gone. It returns an
// error for an empty prefix (which would match every set on the host), when listing fails, and
// joining the other destroy failures.
func Cleanup(iface Interface, prefix string) error {
	if prefix == "" {
		return fmt.Errorf("ipset cleanup: %w: empty prefix would destroy every set", ErrInvalid)
	}
	names, err := iface.ListSets()
	if err != nil {
		return err
	}
	var errs []error
	for _, name := range names {
		if !strings.HasPrefix(name, prefix) {
			continue
		}
		err := iface.Destroy(name)
		switch {
		case err == nil:
			klog.V(2).InfoS("Destroyed ipset", "set", name)
		case errors.Is(err, ErrInUse):
			klog.ErrorS(err, "Skipping ipset that is still in use", "set", name)
		default:
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
