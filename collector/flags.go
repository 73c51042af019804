package collector

import (
	"errors"
	"fmt"
	"reflect"
	"sync"

	"github.com/alecthomas/kingpin/v2"
)

// Flag values are checked once, after parsing and before any collector's
// factory loads BPF programs, attaches them or opens a socket: a bad value
// then stops start-up with a message naming the flag and its bound, and
// leaves nothing behind (no tc filter, no pinned link, no half-started
// listener). Each file that defines a flag registers the check of its values
// next to it with RegisterFlagCheck; ParseFlags runs them all.

type flagCheck struct {
	flag  string
	check func() error
}

var (
	flagChecksMu sync.Mutex
	flagChecks   []flagCheck
)

// RegisterFlagCheck adds a check of flag's parsed value. check returns nil
// or an error saying the bound, for instance
// fmt.Errorf("must be between 1 and %d, got %d", max, v); ParseFlags prefixes
// it with "--flag: ". Collector files call it from init (or a package-level
// var), main for its own flags before ParseFlags.
func RegisterFlagCheck(flag string, check func() error) {
	flagChecksMu.Lock()
	defer flagChecksMu.Unlock()
	flagChecks = append(flagChecks, flagCheck{flag: flag, check: check})
}

// ParseFlags parses args into app's flags and then runs every registered
// check. A value the flag's type cannot parse is reported with the flag's
// name (kingpin's own message, "strconv.ParseFloat: parsing "abc": invalid
// syntax", does not say which flag). All failed checks are reported
// together, so one run shows every bad flag.
func ParseFlags(app *kingpin.Application, args []string) error {
	for _, f := range app.Model().Flags {
		clause := app.GetFlag(f.Name)
		if clause == nil || f.Value == nil {
			continue
		}
		if _, done := f.Value.(namedValue); done || plainString(f.Value) {
			continue
		}
		clause.SetValue(namedValue{name: f.Name, Value: f.Value})
	}
	if _, err := app.Parse(args); err != nil {
		return err
	}
	return CheckFlags()
}

// CheckFlags runs every registered flag check and joins their errors.
func CheckFlags() error {
	flagChecksMu.Lock()
	defer flagChecksMu.Unlock()
	var errs []error
	for _, c := range flagChecks {
		if err := c.check(); err != nil {
			errs = append(errs, fmt.Errorf("--%s: %w", c.flag, err))
		}
	}
	return errors.Join(errs...)
}

// plainString tells kingpin's own string values apart: they never fail to
// parse, and --help quotes their default only when it sees that very type.
func plainString(v kingpin.Value) bool {
	return reflect.TypeOf(v).String() == "*kingpin.stringValue"
}

// namedValue wraps a flag's value so that a parse error names the flag. It
// keeps the optional interfaces kingpin looks for (bool flags, repeatable
// flags), which an embedded interface would hide.
type namedValue struct {
	kingpin.Value
	name string
}

func (v namedValue) Set(s string) error {
	if err := v.Value.Set(s); err != nil {
		return fmt.Errorf("--%s: invalid value %q: %w", v.name, s, err)
	}
	return nil
}

func (v namedValue) IsBoolFlag() bool {
	b, ok := v.Value.(interface{ IsBoolFlag() bool })
	return ok && b.IsBoolFlag()
}

func (v namedValue) IsCumulative() bool {
	c, ok := v.Value.(interface{ IsCumulative() bool })
	return ok && c.IsCumulative()
}

func (v namedValue) Get() any {
	if g, ok := v.Value.(kingpin.Getter); ok {
		return g.Get()
	}
	return nil
}
