package iptables

import (
	"fmt"
	"strconv"
	"strings"
)

// LineError is a problem with one line of restore or save text.
type LineError struct {
	Line int    // 1-based
	Text string // the line as written
	Msg  string
}

func (e *LineError) Error() string {
	return fmt.Sprintf("line %d: %s: %q", e.Line, e.Msg, e.Text)
}

// OpKind is the kind of one restore operation.
type OpKind string

// The operations iptables-restore accepts inside a table.
const (
	OpDeclare     OpKind = ":"  // ":CHAIN POLICY [p:b]" create, or flush if it exists
	OpNewChain    OpKind = "-N" // create; error if it exists
	OpAppend      OpKind = "-A"
	OpInsert      OpKind = "-I"
	OpDelete      OpKind = "-D" // by rule spec or by 1-based number
	OpFlush       OpKind = "-F" // one chain, or the whole table when Chain is ""
	OpDeleteChain OpKind = "-X"
	OpPolicy      OpKind = "-P"
)

// Op is one operation of restore input.
type Op struct {
	Kind  OpKind
	Line  int    // 1-based line number in the input
	Text  string // the line as written
	Chain string
	// Policy is set for OpDeclare and OpPolicy.
	Policy string
	// Position is the 1-based rule number for OpInsert (1 when omitted)
	// and for OpDelete by number; 0 otherwise.
	Position int
	// Args are the rule arguments for OpAppend, OpInsert and OpDelete by spec.
	Args []string
}

// RestoreTable is one "*table ... COMMIT" block.
type RestoreTable struct {
	Name Table
	Line int // line of "*table"
	Ops  []Op
}

// Restore is parsed iptables-restore input: the table blocks in input order,
// each with its operations in order. Applying it is Dump.Apply's job.
type Restore struct {
	Tables []*RestoreTable
}

// ParseRestore parses iptables-restore input. It checks syntax only (lines
// outside a table, missing COMMIT, malformed declarations, bad quoting); rule
// arguments are checked when the input is applied. Errors are *LineError.
func ParseRestore(text []byte) (*Restore, error) {
	r := &Restore{}
	var cur *RestoreTable
	lines := strings.Split(string(text), "\n")
	// A trailing newline does not start another line.
	if n := len(lines); n > 0 && lines[n-1] == "" {
		lines = lines[:n-1]
	}
	for i, raw := range lines {
		lineNo := i + 1
		line := strings.TrimSpace(raw)
		lerr := func(format string, a ...any) error {
			return &LineError{Line: lineNo, Text: raw, Msg: fmt.Sprintf(format, a...)}
		}
		switch {
		case line == "" || strings.HasPrefix(line, "#"):
			continue
		case strings.HasPrefix(line, "*"):
			if cur != nil {
				return nil, lerr("table %q started before table %q was committed", line[1:], cur.Name)
			}
			name := strings.TrimSpace(line[1:])
			if _, ok := builtinChains[Table(name)]; !ok {
				return nil, lerr("unknown table %q", name)
			}
			cur = &RestoreTable{Name: Table(name), Line: lineNo}
			r.Tables = append(r.Tables, cur)
		case line == "COMMIT":
			if cur == nil {
				return nil, lerr("COMMIT outside a table")
			}
			cur = nil
		case cur == nil:
			return nil, lerr("not inside a table (missing *table line)")
		case strings.HasPrefix(line, ":"):
			fields := strings.Fields(line[1:])
			if len(fields) < 2 || len(fields) > 3 {
				return nil, lerr("chain declaration must be \":CHAIN POLICY [packets:bytes]\"")
			}
			cur.Ops = append(cur.Ops, Op{Kind: OpDeclare, Line: lineNo, Text: raw, Chain: fields[0], Policy: fields[1]})
		default:
			op, err := parseCommand(line)
			if err != nil {
				return nil, lerr("%v", err)
			}
			op.Line, op.Text = lineNo, raw
			cur.Ops = append(cur.Ops, op)
		}
	}
	if cur != nil {
		return nil, &LineError{Line: cur.Line, Text: lines[cur.Line-1], Msg: fmt.Sprintf("table %q has no COMMIT", cur.Name)}
	}
	return r, nil
}

// parseCommand parses a command line inside a table (-A, -I, -D, -F, -X,
// -N, -P), optionally preceded by a "[packets:bytes]" counter.
func parseCommand(line string) (Op, error) {
	if strings.HasPrefix(line, "[") {
		end := strings.IndexByte(line, ']')
		if end < 0 {
			return Op{}, fmt.Errorf("unterminated counter")
		}
		line = strings.TrimSpace(line[end+1:])
	}
	args, err := SplitLine(line)
	if err != nil {
		return Op{}, err
	}
	if len(args) == 0 {
		return Op{}, fmt.Errorf("empty command")
	}
	cmd, rest := args[0], args[1:]
	chainArg := func() (string, error) {
		if len(rest) == 0 || strings.HasPrefix(rest[0], "-") {
			return "", fmt.Errorf("%s needs a chain name", cmd)
		}
		return rest[0], nil
	}
	switch cmd {
	case "-A", "--append":
		c, err := chainArg()
		return Op{Kind: OpAppend, Chain: c, Args: rest[min(1, len(rest)):]}, err
	case "-I", "--insert":
		c, err := chainArg()
		if err != nil {
			return Op{}, err
		}
		op := Op{Kind: OpInsert, Chain: c, Position: 1, Args: rest[1:]}
		if len(op.Args) > 0 {
			if n, err := strconv.Atoi(op.Args[0]); err == nil {
				if n < 1 {
					return Op{}, fmt.Errorf("invalid rule number %d", n)
				}
				op.Position, op.Args = n, op.Args[1:]
			}
		}
		return op, nil
	case "-D", "--delete":
		c, err := chainArg()
		if err != nil {
			return Op{}, err
		}
		op := Op{Kind: OpDelete, Chain: c, Args: rest[1:]}
		if len(op.Args) == 1 {
			if n, err := strconv.Atoi(op.Args[0]); err == nil {
				if n < 1 {
					return Op{}, fmt.Errorf("invalid rule number %d", n)
				}
				op.Position, op.Args = n, nil
			}
		}
		return op, nil
	case "-F", "--flush":
		if len(rest) > 1 {
			return Op{}, fmt.Errorf("-F takes at most one chain")
		}
		op := Op{Kind: OpFlush}
		if len(rest) == 1 {
			op.Chain = rest[0]
		}
		return op, nil
	case "-X", "--delete-chain", "-N", "--new-chain":
		c, err := chainArg()
		if err != nil {
			return Op{}, err
		}
		if len(rest) != 1 {
			return Op{}, fmt.Errorf("%s takes exactly one chain", cmd)
		}
		kind := OpDeleteChain
		if cmd == "-N" || cmd == "--new-chain" {
			kind = OpNewChain
		}
		return Op{Kind: kind, Chain: c}, nil
	case "-P", "--policy":
		if len(rest) != 2 {
			return Op{}, fmt.Errorf("-P needs a chain and a policy")
		}
		return Op{Kind: OpPolicy, Chain: rest[0], Policy: rest[1]}, nil
	default:
		return Op{}, fmt.Errorf("unsupported command %q", cmd)
	}
}

// ParseDump parses iptables-save output (or any restore input) into a
// Dump: every table in the text starts from its built-in chains and the
// text is applied to it as a full (not --noflush) restore would. Tables keep
// the order in which they first appear.
//
// Unlike Dump.Apply, ParseDump does not interpret rule arguments, so a live
// host's rules load even when they use matches this package does not know;
// the tracer reports those only if a packet reaches them.
func ParseDump(text []byte) (*Dump, error) {
	r, err := ParseRestore(text)
	if err != nil {
		return nil, err
	}
	d := &Dump{}
	if err := d.apply(r, false, false); err != nil {
		return nil, err
	}
	return d, nil
}

// ParseChain parses one chain as "iptables -t table -S CHAIN" prints it
// (SaveChain): "-P CHAIN POLICY" or "-N CHAIN", then its "-A CHAIN ..."
// rules. Like ParseDump it does not interpret rule arguments.
func ParseChain(table Table, text []byte) (*Chain, error) {
	var body strings.Builder
	name := ""
	for _, line := range strings.Split(string(text), "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) == 3 && f[0] == "-P":
			name = f[1]
			body.WriteString(":" + f[1] + " " + f[2] + " [0:0]\n")
		case len(f) == 2 && f[0] == "-N":
			name = f[1]
			body.WriteString(":" + f[1] + " - [0:0]\n")
		case strings.HasPrefix(line, "-A "):
			body.WriteString(line + "\n")
		case strings.HasPrefix(line, "#"):
			// iptables-nft's notes, such as "# Warning: iptables-legacy
			// tables present".
		case strings.TrimSpace(line) != "":
			return nil, fmt.Errorf("iptables -S output: unexpected line %q", line)
		}
	}
	if name == "" {
		return nil, fmt.Errorf("iptables -S output names no chain")
	}
	d, err := ParseDump([]byte("*" + string(table) + "\n" + body.String() + "COMMIT\n"))
	if err != nil {
		return nil, err
	}
	return d.Chain(table, name), nil
}
