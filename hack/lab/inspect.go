package lab

import (
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"strings"
	"sync"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Family is an IP family of the lab's address plan.
type Family int

// The lab's IP families.
const (
	IPv4 Family = 4
	IPv6 Family = 6
)

// String is "IPv4" or "IPv6", as kube-proxy's ip_family metric label says.
func (f Family) String() string {
	if f == IPv6 {
		return "IPv6"
	}
	return "IPv4"
}

// SaveTable returns `iptables-save -t table` (ip6tables-save for IPv6) run
// inside namespace ns, e.g. a node's; bounded by ctx and 60 s.
func SaveTable(ctx context.Context, ns string, family Family, table string) (string, error) {
	bin := "iptables-save"
	if family == IPv6 {
		bin = "ip6tables-save"
	}
	out, err := Exec(ctx, ns, bin, "-t", table)
	return string(out), err
}

// MetricsURL is where the proxies in the lab serve their metrics
// (--metrics-bind-address 127.0.0.1:10249), seen from their node namespace.
const MetricsURL = "http://127.0.0.1:10249/metrics"

// Metrics is one scrape of a Prometheus text endpoint, by metric name.
type Metrics map[string]*dto.MetricFamily

var metricsClients sync.Map // namespace -> *http.Client

// metricsClient returns a client whose connections are made inside ns and
// kept alive between scrapes (scrapes every few ms must not cost a dial).
func metricsClient(ns string) *http.Client {
	if c, ok := metricsClients.Load(ns); ok {
		return c.(*http.Client)
	}
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DialContext: DialContextInNetns(ns), MaxIdleConns: 2}}
	c2, _ := metricsClients.LoadOrStore(ns, c)
	return c2.(*http.Client)
}

// ScrapeMetrics GETs url (usually MetricsURL) from inside namespace ns and
// parses the Prometheus text format. Bounded by ctx and 5 s.
func ScrapeMetrics(ctx context.Context, ns, url string) (Metrics, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := metricsClient(ns).Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s in %s: HTTP %d", url, ns, resp.StatusCode)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, fmt.Errorf("%s in %s: %w", url, ns, err)
	}
	return Metrics(mfs), nil
}

// Flat returns the samples that belong to family as name → value, the way
// the lab's tools read kube-proxy's metrics:
//
//   - samples labelled ip_family with another family are left out, and the
//     ip_family label is dropped (both proxies run dual-stack; each family
//     has its own syncs);
//   - counters, gauges and untyped samples are "name"; histograms and
//     summaries give "name_sum" and "name_count" (no buckets or quantiles);
//   - a labelled sample is also under "name{k="v",...}" (remaining labels in
//     exposition order), and labelled samples add up under the bare name,
//     except *_timestamp_seconds, where the bare name holds the latest.
func (m Metrics) Flat(family Family) map[string]float64 {
	out := map[string]float64{}
	for name, mf := range m {
		for _, s := range mf.GetMetric() {
			var labels []string
			other := false
			for _, lp := range s.GetLabel() {
				if lp.GetName() == "ip_family" {
					other = lp.GetValue() != family.String()
					continue
				}
				labels = append(labels, fmt.Sprintf("%s=%q", lp.GetName(), lp.GetValue()))
			}
			if other {
				continue
			}
			labelled := len(s.GetLabel()) > 0
			for _, v := range sampleValues(name, mf.GetType(), s) {
				if !labelled {
					out[v.name] = v.value
					continue
				}
				if strings.HasSuffix(v.name, "_timestamp_seconds") {
					out[v.name] = math.Max(out[v.name], v.value)
				} else {
					out[v.name] += v.value
				}
				if len(labels) > 0 {
					out[v.name+"{"+strings.Join(labels, ",")+"}"] += v.value
				}
			}
		}
	}
	return out
}

type namedValue struct {
	name  string
	value float64
}

func sampleValues(name string, typ dto.MetricType, s *dto.Metric) []namedValue {
	switch typ {
	case dto.MetricType_COUNTER:
		return []namedValue{{name, s.GetCounter().GetValue()}}
	case dto.MetricType_GAUGE:
		return []namedValue{{name, s.GetGauge().GetValue()}}
	case dto.MetricType_HISTOGRAM, dto.MetricType_GAUGE_HISTOGRAM:
		h := s.GetHistogram()
		return []namedValue{{name + "_sum", h.GetSampleSum()}, {name + "_count", float64(h.GetSampleCount())}}
	case dto.MetricType_SUMMARY:
		sm := s.GetSummary()
		return []namedValue{{name + "_sum", sm.GetSampleSum()}, {name + "_count", float64(sm.GetSampleCount())}}
	default:
		return []namedValue{{name, s.GetUntyped().GetValue()}}
	}
}
