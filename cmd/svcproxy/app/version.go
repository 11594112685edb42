package app

import (
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// version is set at build time:
//
//	go build -ldflags "-X github.com/svcproxy/svcproxy/cmd/svcproxy/app.version=v1.2.3" ./cmd/svcproxy
//
// (make build and hack/image.sh do, from git describe). Empty means the
// main module's version from the build information, or DevVersion.
var version string

// DevVersion is the version of a build that was given none.
const DevVersion = "v0.0.0-dev"

// Version returns svcproxy's version.
func Version() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return DevVersion
}

// VersionInfo is what --version=raw prints, as kube-proxy prints its
// version.Info.
type VersionInfo struct {
	Version   string
	GitCommit string
	GoVersion string
	Compiler  string
	Platform  string
}

func versionInfo() VersionInfo {
	v := VersionInfo{Version: Version(), GoVersion: runtime.Version(), Compiler: runtime.Compiler,
		Platform: runtime.GOOS + "/" + runtime.GOARCH}
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" {
				v.GitCommit = s.Value
			}
		}
	}
	return v
}

// versionFlag is kube-proxy's --version (component-base verflag): a bool
// flag that also takes "raw", or "vX.Y.Z" to set the reported version.
type versionFlag string

const (
	versionFalse versionFlag = "false"
	versionTrue  versionFlag = "true"
	versionRaw   versionFlag = "raw"
)

func (v *versionFlag) IsBoolFlag() bool { return true }
func (v *versionFlag) String() string   { return string(*v) }
func (v *versionFlag) Type() string     { return "version" }
func (v *versionFlag) Set(s string) error {
	switch {
	case s == string(versionRaw):
		*v = versionRaw
	case strings.HasPrefix(s, "v"):
		version = s // as verflag: --version=vX.Y.Z sets the reported version
		*v = versionFalse
	default:
		b, err := strconv.ParseBool(s)
		if err != nil {
			return fmt.Errorf("want true, false, raw or vX.Y.Z: %w", err)
		}
		*v = versionFalse
		if b {
			*v = versionTrue
		}
	}
	return nil
}

func addVersionFlag(fs *pflag.FlagSet) *versionFlag {
	v := versionFalse
	fs.Var(&v, "version", "--version, --version=raw prints version information and quits; --version=vX.Y.Z... sets the reported version")
	fs.Lookup("version").NoOptDefVal = "true"
	return &v
}

// printVersion prints what --version asks for, reporting whether it did
// (the command then exits 0, as kube-proxy's).
func (v *versionFlag) print(w io.Writer) bool {
	switch *v {
	case versionRaw:
		fmt.Fprintf(w, "%#v\n", versionInfo())
		return true
	case versionTrue:
		fmt.Fprintf(w, "svcproxy %s\n", Version())
		return true
	}
	return false
}

func newVersionCommand() *cobra.Command {
	var raw bool
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print svcproxy's version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if raw {
				fmt.Fprintf(cmd.OutOrStdout(), "%#v\n", versionInfo())
				return nil
			}
			fmt.Fprintf(cmd.OutOrStdout(), "svcproxy %s\n", Version())
			return nil
		},
	}
	cmd.Flags().BoolVar(&raw, "raw", false, "Print the full version information (as --version=raw)")
	return cmd
}
