package proxier

import (
	"k8s.io/apimachinery/pkg/types"

	"github.com/svcproxy/svcproxy/proxier/model"
)

// ServiceHealthSyncer is what the sync loop tells the service health-check
// server (healthcheck.ServiceHealthServer implements it).
type ServiceHealthSyncer interface {
	SyncServices(ports map[types.NamespacedName]uint16) error
	SyncEndpoints(localReady map[types.NamespacedName]int)
}

// ConntrackCleaner lists and deletes UDP conntrack entries for one family
// (conntrack.Netlink is the real one).
type ConntrackCleaner interface {
	ListUDP() ([]model.UDPFlow, error)
	Delete(flows []model.UDPFlow) (int, error)
}
