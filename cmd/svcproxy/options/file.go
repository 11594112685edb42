package options

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	logsapi "k8s.io/component-base/logs/api/v1"
	"k8s.io/kube-proxy/config/v1alpha1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"
)

// The configuration file's API version and kind.
const (
	APIVersion = "kubeproxy.config.k8s.io/v1alpha1"
	Kind       = "KubeProxyConfiguration"
)

// removedFields are file fields that older KubeProxyConfigurations had (or
// that v1alpha1 still has but no longer mean anything). Real clusters carry
// old ConfigMaps, so these are tolerated with a warning instead of failing
// the strict decode. Keys are JSON paths.
var removedFields = map[string]string{
	"portRange":         "it configured the userspace proxy, removed in Kubernetes v1.26",
	"udpIdleTimeout":    "it configured the userspace proxy, removed in Kubernetes v1.26",
	"resourceContainer": "removed from kube-proxy in Kubernetes v1.16",
	"conntrack.max":     "removed from kube-proxy; use conntrack.maxPerCore and conntrack.min",
}

// LoadConfigFile reads a KubeProxyConfiguration file (YAML or JSON) and
// resolves it into a Config: values the file leaves empty, zero or null take
// the defaults, as kube-proxy's v1alpha1 defaulting does. It returns
// warnings for settings it accepts but ignores.
//
// Errors name the file and, where there is one, the field: the file cannot
// be read; it is not YAML; apiVersion or kind is missing or wrong; a field is
// unknown (typos; fields removed from kube-proxy in the past only warn); a
// field is duplicated or of the wrong type; clusterCIDR is not a CIDR list.
// Semantic checks (ranges, modes) are left to Config.Validate.
func LoadConfigFile(path string) (Config, []string, error) {
	kp, ext, warnings, err := decodeConfigFile(path)
	if err != nil {
		return Config{}, nil, err
	}
	cfg, w, err := fromV1Alpha1(kp, path)
	if ext.RuleLayout != "" {
		cfg.RuleLayout = ext.RuleLayout
	}
	return cfg, append(warnings, w...), err
}

// Extensions is the file's "svcproxy" section: svcproxy's own settings
// beside kube-proxy's. kube-proxy, should the file go back to it, warns
// about the unknown field and carries on.
//
//	apiVersion: kubeproxy.config.k8s.io/v1alpha1
//	kind: KubeProxyConfiguration
//	svcproxy:
//	  ruleLayout: kube-proxy
type Extensions struct {
	// RuleLayout is --rule-layout.
	RuleLayout string `json:"ruleLayout,omitempty"`
}

// extensionsKey is the field of the file that holds Extensions.
const extensionsKey = "svcproxy"

// decodeConfigFile strictly decodes path into a v1alpha1 configuration and
// svcproxy's extensions.
func decodeConfigFile(path string) (*v1alpha1.KubeProxyConfiguration, Extensions, []string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, Extensions{}, nil, fmt.Errorf("reading config file: %w", err)
	}
	return decodeConfig(data, path)
}

func decodeConfig(data []byte, path string) (*v1alpha1.KubeProxyConfiguration, Extensions, []string, error) {
	var ext Extensions
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, ext, nil, fmt.Errorf("%s: config file is empty", path)
	}
	// YAMLToJSONStrict rejects duplicate keys.
	js, err := yaml.YAMLToJSONStrict(data)
	if err != nil {
		return nil, ext, nil, fmt.Errorf("%s: %w", path, err)
	}
	var raw map[string]any
	if err := json.Unmarshal(js, &raw); err != nil || raw == nil {
		return nil, ext, nil, fmt.Errorf("%s: not a %s object", path, Kind)
	}
	if section, ok := raw[extensionsKey]; ok {
		delete(raw, extensionsKey)
		b, _ := json.Marshal(section)
		if err := yaml.UnmarshalStrict(b, &ext); err != nil {
			return nil, ext, nil, fmt.Errorf("%s: %s: %w", path, extensionsKey, err)
		}
	}

	var errs []error
	apiVersion, _ := raw["apiVersion"].(string)
	kind, _ := raw["kind"].(string)
	switch apiVersion {
	case APIVersion:
	case "":
		errs = append(errs, fmt.Errorf("%s: apiVersion is missing (want %s)", path, APIVersion))
	default:
		errs = append(errs, fmt.Errorf("%s: apiVersion %q is not supported (want %s)", path, apiVersion, APIVersion))
	}
	switch kind {
	case Kind:
	case "":
		errs = append(errs, fmt.Errorf("%s: kind is missing (want %s)", path, Kind))
	default:
		errs = append(errs, fmt.Errorf("%s: kind %q is not supported (want %s)", path, kind, Kind))
	}

	// Find every unknown field (json's DisallowUnknownFields stops at the
	// first and cannot tolerate some), drop the tolerated ones.
	var warnings []string
	for _, u := range unknownFields(raw, reflect.TypeFor[v1alpha1.KubeProxyConfiguration](), "") {
		if why, ok := removedFields[u.path]; ok {
			warnings = append(warnings, fmt.Sprintf("%s: field %q is ignored: %s", path, u.path, why))
			u.drop()
			continue
		}
		msg := fmt.Sprintf("%s: unknown field %q", path, u.path)
		if u.suggest != "" {
			msg += fmt.Sprintf(" (did you mean %q?)", u.suggest)
		}
		errs = append(errs, errors.New(msg))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, ext, nil, err
	}

	if js, err = json.Marshal(raw); err != nil {
		return nil, ext, nil, fmt.Errorf("%s: %w", path, err)
	}
	kp := &v1alpha1.KubeProxyConfiguration{}
	if err := yaml.UnmarshalStrict(js, kp); err != nil {
		return nil, ext, nil, fmt.Errorf("%s: %w", path, err)
	}
	return kp, ext, warnings, nil
}

type unknownField struct {
	path    string // JSON path, dot-separated
	suggest string // the closest known field at that level, if close
	drop    func() // removes the field from the raw document
}

var jsonUnmarshaler = reflect.TypeFor[json.Unmarshaler]()

// unknownFields walks a decoded JSON document against the Go type it will
// be decoded into and lists the object keys that type has no field for.
// Field names match case-sensitively, as Kubernetes' strict decoding does.
func unknownFields(v any, t reflect.Type, path string) []unknownField {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if reflect.PointerTo(t).Implements(jsonUnmarshaler) {
		return nil // custom format (durations, quantities): the decoder checks it
	}
	var out []unknownField
	switch t.Kind() {
	case reflect.Struct:
		obj, ok := v.(map[string]any)
		if !ok {
			return nil // null or wrong type: the decoder reports type errors
		}
		fields := jsonFields(t)
		keys := make([]string, 0, len(obj))
		for k := range obj {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			p := k
			if path != "" {
				p = path + "." + k
			}
			ft, ok := fields[k]
			if !ok {
				out = append(out, unknownField{path: p, suggest: closest(k, fields), drop: func() { delete(obj, k) }})
				continue
			}
			out = append(out, unknownFields(obj[k], ft, p)...)
		}
	case reflect.Map:
		if obj, ok := v.(map[string]any); ok {
			for k, e := range obj {
				out = append(out, unknownFields(e, t.Elem(), path+"."+k)...)
			}
		}
	case reflect.Slice, reflect.Array:
		if arr, ok := v.([]any); ok {
			for i, e := range arr {
				out = append(out, unknownFields(e, t.Elem(), fmt.Sprintf("%s[%d]", path, i))...)
			}
		}
	}
	return out
}

// jsonFields maps the JSON names of t's fields (following inline and
// embedded structs) to their types.
func jsonFields(t reflect.Type) map[string]reflect.Type {
	fields := map[string]reflect.Type{}
	for i := range t.NumField() {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, opts, _ := strings.Cut(tag, ",")
		inline := strings.Contains(","+opts+",", ",inline,")
		if (name == "" && f.Anonymous) || inline {
			ft := f.Type
			for ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				for k, v := range jsonFields(ft) {
					fields[k] = v
				}
				continue
			}
		}
		if !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		fields[name] = f.Type
	}
	return fields
}

// closest returns the known field most like k, if it differs only in case
// or by at most two edits.
func closest(k string, fields map[string]reflect.Type) string {
	best, bestD := "", 3
	for f := range fields {
		if strings.EqualFold(f, k) {
			return f
		}
		if d := editDistance(strings.ToLower(f), strings.ToLower(k)); d < bestD || (d == bestD && f < best) {
			best, bestD = f, d
		}
	}
	return best
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// fromV1Alpha1 resolves a decoded file into a Config, starting from Defaults
// and taking every value the file sets (non-empty, non-zero, non-null), as
// kube-proxy's v1alpha1 defaulting does. Flag-only settings keep their
// defaults. It fails only on an unparsable clusterCIDR.
func fromV1Alpha1(kp *v1alpha1.KubeProxyConfiguration, path string) (Config, []string, error) {
	c := Defaults()
	var warnings []string
	warn := func(format string, args ...any) {
		warnings = append(warnings, path+": "+fmt.Sprintf(format, args...))
	}
	setStr := func(dst *string, v string) {
		if v != "" {
			*dst = v
		}
	}
	setDur := func(dst *time.Duration, v time.Duration) {
		if v != 0 {
			*dst = v
		}
	}

	cc := kp.ClientConnection
	c.Kubeconfig = cc.Kubeconfig
	c.AcceptContentTypes = cc.AcceptContentTypes
	setStr(&c.ContentType, cc.ContentType)
	if cc.QPS != 0 {
		c.QPS = cc.QPS
	}
	if cc.Burst != 0 {
		c.Burst = cc.Burst
	}

	c.HostnameOverride = kp.HostnameOverride
	setStr(&c.BindAddress, kp.BindAddress)
	c.BindAddressHardFail = kp.BindAddressHardFail
	// Like kube-proxy: empty addresses default to the bind address's family;
	// a bare IP gets the default port.
	healthzHost, metricsHost := "0.0.0.0", "127.0.0.1"
	if ip, err := netip.ParseAddr(c.BindAddress); err == nil && !ip.Unmap().Is4() {
		healthzHost, metricsHost = "::", "::1"
	}
	c.HealthzBindAddress = net.JoinHostPort(healthzHost, strconv.Itoa(DefaultHealthzPort))
	if kp.HealthzBindAddress != "" {
		c.HealthzBindAddress = appendPortIfNeeded(kp.HealthzBindAddress, DefaultHealthzPort)
	}
	c.MetricsBindAddress = net.JoinHostPort(metricsHost, strconv.Itoa(DefaultMetricsPort))
	if kp.MetricsBindAddress != "" {
		c.MetricsBindAddress = appendPortIfNeeded(kp.MetricsBindAddress, DefaultMetricsPort)
	}
	c.ShowHiddenMetricsForVersion = kp.ShowHiddenMetricsForVersion
	if kp.EnableProfiling {
		warn("enableProfiling is accepted for kube-proxy compatibility and ignored")
	}
	if kp.PortRange != "" {
		warn("portRange is ignored: %s", removedFields["portRange"])
	}

	setStr(&c.Mode, string(kp.Mode))
	ipt := kp.IPTables
	if ipt.MasqueradeBit != nil {
		c.MasqueradeBit = *ipt.MasqueradeBit
	}
	c.MasqueradeAll = ipt.MasqueradeAll
	if ipt.LocalhostNodePorts != nil {
		c.LocalhostNodePorts = *ipt.LocalhostNodePorts
	}
	setDur(&c.SyncPeriod, ipt.SyncPeriod.Duration)
	setDur(&c.MinSyncPeriod, ipt.MinSyncPeriod.Duration)
	setDur(&c.ConfigSyncPeriod, kp.ConfigSyncPeriod.Duration)

	setStr(&c.DetectLocalMode, string(kp.DetectLocalMode))
	c.DetectLocal = DetectLocal{
		BridgeInterface:     kp.DetectLocal.BridgeInterface,
		InterfaceNamePrefix: kp.DetectLocal.InterfaceNamePrefix,
	}
	cidrs, err := parsePrefixList(kp.ClusterCIDR, "clusterCIDR")
	if err != nil {
		return Config{}, nil, fmt.Errorf("%s: %w", path, err)
	}
	c.ClusterCIDRs = cidrs
	c.NodePortAddresses = kp.NodePortAddresses

	if kp.OOMScoreAdj != nil {
		c.OOMScoreAdj = *kp.OOMScoreAdj
	}
	ct := kp.Conntrack
	if ct.MaxPerCore != nil {
		c.Conntrack.MaxPerCore = *ct.MaxPerCore
	}
	if ct.Min != nil {
		c.Conntrack.Min = *ct.Min
	}
	if ct.TCPEstablishedTimeout != nil {
		c.Conntrack.TCPEstablishedTimeout = ct.TCPEstablishedTimeout.Duration
	}
	if ct.TCPCloseWaitTimeout != nil {
		c.Conntrack.TCPCloseWaitTimeout = ct.TCPCloseWaitTimeout.Duration
	}
	c.Conntrack.TCPBeLiberal = ct.TCPBeLiberal
	c.Conntrack.UDPTimeout = ct.UDPTimeout.Duration
	c.Conntrack.UDPStreamTimeout = ct.UDPStreamTimeout.Duration

	for k, v := range kp.FeatureGates {
		c.FeatureGates[k] = v
	}
	return c, warnings, nil
}

// toV1Alpha1 renders c as a KubeProxyConfiguration that kube-proxy itself
// would read the same way. Flag-only settings (Master, svcproxy extras) have
// no place in it.
func toV1Alpha1(c *Config) *v1alpha1.KubeProxyConfiguration {
	dur := func(d time.Duration) metav1.Duration { return metav1.Duration{Duration: d} }
	kp := &v1alpha1.KubeProxyConfiguration{
		TypeMeta:     metav1.TypeMeta{APIVersion: APIVersion, Kind: Kind},
		FeatureGates: c.FeatureGates,
		Logging: logsapi.LoggingConfiguration{
			Format:         "text",
			FlushFrequency: logsapi.TimeOrMetaDuration{Duration: dur(logsapi.LogFlushFreqDefault), SerializeAsString: true},
		},
		HostnameOverride:            c.HostnameOverride,
		BindAddress:                 c.BindAddress,
		HealthzBindAddress:          c.HealthzBindAddress,
		MetricsBindAddress:          c.MetricsBindAddress,
		BindAddressHardFail:         c.BindAddressHardFail,
		ShowHiddenMetricsForVersion: c.ShowHiddenMetricsForVersion,
		Mode:                        v1alpha1.ProxyMode(c.Mode),
		IPTables: v1alpha1.KubeProxyIPTablesConfiguration{
			MasqueradeBit:      ptr.To(c.MasqueradeBit),
			MasqueradeAll:      c.MasqueradeAll,
			LocalhostNodePorts: ptr.To(c.LocalhostNodePorts),
			SyncPeriod:         dur(c.SyncPeriod),
			MinSyncPeriod:      dur(c.MinSyncPeriod),
		},
		// kube-proxy's defaults for the modes svcproxy does not implement.
		IPVS: v1alpha1.KubeProxyIPVSConfiguration{SyncPeriod: dur(30 * time.Second)},
		NFTables: v1alpha1.KubeProxyNFTablesConfiguration{
			MasqueradeBit: ptr.To[int32](14),
			SyncPeriod:    dur(30 * time.Second),
			MinSyncPeriod: dur(time.Second),
		},
		DetectLocalMode: v1alpha1.LocalMode(c.DetectLocalMode),
		DetectLocal: v1alpha1.DetectLocalConfiguration{
			BridgeInterface:     c.DetectLocal.BridgeInterface,
			InterfaceNamePrefix: c.DetectLocal.InterfaceNamePrefix,
		},
		ClusterCIDR:       joinPrefixes(c.ClusterCIDRs),
		NodePortAddresses: c.NodePortAddresses,
		OOMScoreAdj:       ptr.To(c.OOMScoreAdj),
		Conntrack: v1alpha1.KubeProxyConntrackConfiguration{
			MaxPerCore:            ptr.To(c.Conntrack.MaxPerCore),
			Min:                   ptr.To(c.Conntrack.Min),
			TCPEstablishedTimeout: ptr.To(dur(c.Conntrack.TCPEstablishedTimeout)),
			TCPCloseWaitTimeout:   ptr.To(dur(c.Conntrack.TCPCloseWaitTimeout)),
			TCPBeLiberal:          c.Conntrack.TCPBeLiberal,
			UDPTimeout:            dur(c.Conntrack.UDPTimeout),
			UDPStreamTimeout:      dur(c.Conntrack.UDPStreamTimeout),
		},
		ConfigSyncPeriod: dur(c.ConfigSyncPeriod),
	}
	kp.ClientConnection.Kubeconfig = c.Kubeconfig
	kp.ClientConnection.AcceptContentTypes = c.AcceptContentTypes
	kp.ClientConnection.ContentType = c.ContentType
	kp.ClientConnection.QPS = c.QPS
	kp.ClientConnection.Burst = c.Burst
	return kp
}

// MarshalConfig renders c as a KubeProxyConfiguration YAML document. When c
// has flag-only settings that differ from the defaults, they are listed in a
// leading comment, since the file cannot carry them.
func MarshalConfig(c *Config) ([]byte, error) {
	return marshalConfig(c, nil)
}

// marshalConfig is MarshalConfig with the logging section from logging
// (nil: the defaults).
func marshalConfig(c *Config, logging *logsapi.LoggingConfiguration) ([]byte, error) {
	kp := toV1Alpha1(c)
	if logging != nil {
		kp.Logging = *logging.DeepCopy()
	}
	body, err := yaml.Marshal(kp)
	if err != nil {
		return nil, err
	}
	var extra []string
	d := Defaults()
	if c.Master != "" {
		extra = append(extra, "--master="+c.Master)
	}
	if c.IPTablesBackend != d.IPTablesBackend {
		extra = append(extra, "--iptables-backend="+string(c.IPTablesBackend))
	}
	if c.MasqueradePodEgress {
		extra = append(extra, "--masquerade-pod-egress=true")
	}
	if len(c.NoMasqueradeCIDRs) > 0 {
		extra = append(extra, "--no-masquerade-cidrs="+joinPrefixes(c.NoMasqueradeCIDRs))
	}
	if c.RuleLayout != d.RuleLayout && c.RuleLayout != "" {
		section, err := yaml.Marshal(map[string]Extensions{extensionsKey: {RuleLayout: c.RuleLayout}})
		if err != nil {
			return nil, err
		}
		body = append(body, section...)
	}
	if len(extra) == 0 {
		return body, nil
	}
	head := "# svcproxy flags not expressible in this file (pass them on the command line):\n#   " +
		strings.Join(extra, " ") + "\n"
	return append([]byte(head), body...), nil
}
