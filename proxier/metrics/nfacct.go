package metrics

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/klog/v2"

	"github.com/svcproxy/svcproxy/iptables"
)

// kube-proxy's (iptables mode) metrics read from nfacct counters at each
// scrape. Their names and help texts are kube-proxy's.
var (
	ctStateInvalidDroppedDesc = prometheus.NewDesc(subsystem+"_iptables_ct_state_invalid_dropped_packets_total",
		help("packets dropped by iptables to work around conntrack problems"), nil, nil)
	localhostNodePortsAcceptedDesc = prometheus.NewDesc(subsystem+"_iptables_localhost_nodeports_accepted_packets_total",
		help("Number of packets accepted on nodeports of loopback interface"), nil, nil)
)

// nfacctCollector serves one nfacct counter as a Prometheus counter.
type nfacctCollector struct {
	acct    iptables.NFAcct
	counter string
	desc    *prometheus.Desc
}

func (c *nfacctCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

// Collect reads the counter. One that does not exist yet (before the first
// full sync made it) is left out of the scrape, as kube-proxy does.
func (c *nfacctCollector) Collect(ch chan<- prometheus.Metric) {
	v, err := c.acct.Get(c.counter)
	if err != nil {
		if !errors.Is(err, iptables.ErrNoCounter) {
			klog.ErrorS(err, "Failed to read nfacct counter for metrics", "counter", c.counter)
		}
		return
	}
	ch <- prometheus.MustNewConstMetric(c.desc, prometheus.CounterValue, float64(v.Packets))
}

// RegisterNFAcct registers kube-proxy's two nfacct-based metrics, read from
// acct, into Registry. Call it once (a second call is an error).
func RegisterNFAcct(acct iptables.NFAcct) error {
	var errs []error
	for _, c := range NewNFAcctCollectors(acct) {
		errs = append(errs, registry.Register(c))
	}
	return errors.Join(errs...)
}

// NewNFAcctCollectors returns the collectors of kube-proxy's two
// nfacct-based metrics, read from acct at each scrape.
func NewNFAcctCollectors(acct iptables.NFAcct) []prometheus.Collector {
	return []prometheus.Collector{
		&nfacctCollector{acct: acct, counter: iptables.NFAcctInvalidDropped, desc: ctStateInvalidDroppedDesc},
		&nfacctCollector{acct: acct, counter: iptables.NFAcctLocalhostNodePorts, desc: localhostNodePortsAcceptedDesc},
	}
}
