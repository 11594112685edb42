// Package app holds svcproxy's commands. Invoked with no subcommand (as
// kubeadm's DaemonSet invokes kube-proxy), svcproxy runs the daemon.
package app

import (
	"errors"
	"fmt"
	"io"

	"github.com/spf13/cobra"
	"k8s.io/klog/v2"
)

// Exit codes: 1 for runtime failures, 2 for bad input (flags, manifests).
const (
	exitFailure  = 1
	exitBadInput = 2
)

// inputError marks errors caused by what the user gave us.
type inputError struct{ err error }

func (e inputError) Error() string { return e.err.Error() }
func (e inputError) Unwrap() error { return e.err }

func badInput(err error) error { return inputError{err} }

// Main runs svcproxy with args and returns the process exit code.
func Main(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	root := NewRootCommand(stdin, stdout, stderr)
	root.SetArgs(args)
	err := root.Execute()
	klog.Flush() // as component-base's cli.Run: nothing buffered is lost
	if err == nil {
		return 0
	}
	var code exitCode
	if errors.As(err, &code) {
		return int(code)
	}
	fmt.Fprintln(stderr, "svcproxy:", err)
	var in inputError
	if errors.As(err, &in) || isFlagError(err) {
		return exitBadInput
	}
	return exitFailure
}

// NewRootCommand builds the command tree.
func NewRootCommand(stdin io.Reader, stdout, stderr io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:           "svcproxy",
		Short:         "A drop-in replacement for kube-proxy (iptables mode)",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return badInput(err) })
	root.AddCommand(newDumpCommand(), newExplainCommand(), newRunCommand(), newCleanupCommand(), newVersionCommand())
	// Invoked as kubeadm invokes kube-proxy (flags, no subcommand), run the
	// daemon: swapping the image is the whole migration.
	addDaemonFlags(root)
	return root
}

func isFlagError(err error) bool {
	var in inputError
	return errors.As(err, &in)
}
