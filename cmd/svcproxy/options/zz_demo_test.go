package options
import ("testing";"os";"fmt")
func TestDemo(t *testing.T){
 o,_:=mustParse(t,"--cluster-cidr=10.244.0.0/16","--masquerade-pod-egress")
 o.WriteConfigTo("/tmp/optdemo/out.yaml"); b,_:=os.ReadFile("/tmp/optdemo/out.yaml"); fmt.Println(string(b))
 p:=writeFile(t,"apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\niptables: {masqueradeBitt: 3, syncPeriod: 1s, minSyncPeriod: 5s}\nmode: ipvs\nfoo: 1\n")
 _,_,err:=parse(t,"--config="+p); fmt.Println(err)
 p=writeFile(t,"apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\niptables: {masqueradeBit: 40, syncPeriod: 1s, minSyncPeriod: 5s}\nmode: ipvs\n")
 o,_,err=parse(t,"--config="+p); fmt.Println(err); fmt.Println(o.Validate())
 _,_,err=parse(t,"--cluster-cidr=10.0.0.0/33"); fmt.Println(err)
}
