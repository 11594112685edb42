package main
import (
 _ "k8s.io/client-go/informers"
 _ "k8s.io/client-go/kubernetes"
 _ "k8s.io/client-go/tools/clientcmd"
 _ "k8s.io/api/core/v1"
 _ "k8s.io/api/discovery/v1"
 _ "k8s.io/apimachinery/pkg/util/yaml"
 _ "github.com/coreos/go-iptables/iptables"
 _ "github.com/vishvananda/netlink"
 _ "github.com/spf13/cobra"
 _ "github.com/prometheus/client_golang/prometheus"
 _ "k8s.io/klog/v2"
 _ "k8s.io/kube-proxy/config/v1alpha1"
 _ "sigs.k8s.io/yaml"
)
func main(){}
