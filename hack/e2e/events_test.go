package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/svcproxy/svcproxy/hack/lab"
)

// TestStartingEvent: `svcproxy run` reports kube-proxy's Normal "Starting"
// Event (events.k8s.io/v1, action StartKubeProxy, reporting controller
// kube-proxy) on its own Node, as kube-proxy does at start.
func TestStartingEvent(t *testing.T) {
	e := setup(t)
	for _, n := range e.lab.Nodes {
		err := lab.Poll(context.Background(), converge, 500*time.Millisecond, func() error {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			list, err := e.cs.EventsV1().Events(metav1.NamespaceDefault).List(ctx, metav1.ListOptions{})
			if err != nil {
				return err
			}
			for _, ev := range list.Items {
				r := ev.Regarding
				if r.Kind == "Node" && r.Name == n.Name && ev.Reason == "Starting" && ev.Type == "Normal" &&
					ev.Action == "StartKubeProxy" && ev.ReportingController == "kube-proxy" {
					return nil
				}
			}
			return fmt.Errorf("no Starting event for Node %s among %d events", n.Name, len(list.Items))
		})
		if err != nil {
			t.Error(err)
		}
	}
}
