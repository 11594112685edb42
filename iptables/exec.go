package iptables

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
)

// Executor runs one command to completion. It is the only place the real
// implementation touches the system, so tests substitute a fake.
//
// When the command exits non-zero, Run returns an error that unwraps to
// *ExitError (see errors.As) so callers can tell "no such rule" (exit 1)
// from other failures; stdout is returned either way.
type Executor interface {
	Run(ctx context.Context, name string, args []string, stdin []byte) (stdout []byte, err error)
}

// ExitError is a command that ran and exited non-zero.
type ExitError struct {
	Name   string
	Args   []string
	Code   int
	Stderr string
}

func (e *ExitError) Error() string {
	msg := fmt.Sprintf("%s %s: exit status %d", e.Name, strings.Join(e.Args, " "), e.Code)
	if s := strings.TrimSpace(e.Stderr); s != "" {
		msg += ": " + s
	}
	return msg
}

// exitCode returns 0 for nil, err's exit code for an *ExitError, or -1.
func exitCode(err error) int {
	if err == nil {
		return 0
	}
	var ee *ExitError
	if errors.As(err, &ee) {
		return ee.Code
	}
	return -1
}

// OSExecutor runs commands with os/exec.
type OSExecutor struct{}

var _ Executor = OSExecutor{}

// Run implements Executor.
func (OSExecutor) Run(ctx context.Context, name string, args []string, stdin []byte) ([]byte, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return stdout.Bytes(), nil
	case errors.As(err, &ee) && ee.ExitCode() >= 0:
		return stdout.Bytes(), &ExitError{Name: name, Args: args, Code: ee.ExitCode(), Stderr: stderr.String()}
	default:
		// Not started, or killed (e.g. by ctx).
		return stdout.Bytes(), fmt.Errorf("%s %s: %w (stderr: %q)", name, strings.Join(args, " "), err, stderr.String())
	}
}
