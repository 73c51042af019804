// Package xfrmstat reads the kernel's XFRM MIB, /proc/net/xfrm_stat: one
// "Name<blanks>value" line per counter, per network namespace.
//
// The parser accepts any counter name the kernel prints, so counters added
// by later kernels come through without a code change, and keeps them in the
// kernel's order. Anything it does not understand is an error: a wrong
// number is worse than no number.
package xfrmstat

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
)

// Path is the MIB file of the reader's own network namespace.
const Path = "/proc/net/xfrm_stat"

// maxCounters bounds what a malformed or hostile file can make us allocate
// and export; current kernels print 32.
const maxCounters = 256

// Counter is one line of the file.
type Counter struct {
	Name  string // as the kernel spells it, e.g. XfrmInNoStates
	Value uint64
}

// ErrMalformed marks input that is not an xfrm_stat file.
var ErrMalformed = errors.New("malformed xfrm_stat")

// ReadFile reads and parses the file at path.
func ReadFile(path string) ([]Counter, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	counters, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return counters, nil
}

// Parse parses the file's content.
func Parse(data []byte) ([]Counter, error) {
	var counters []Counter
	seen := map[string]bool{}
	for n, line := range bytes.Split(data, []byte("\n")) {
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		fields := bytes.Fields(line)
		if len(fields) != 2 {
			return nil, fmt.Errorf("%w: line %d: want \"name value\", got %q", ErrMalformed, n+1, line)
		}
		name := string(fields[0])
		if !validName(name) {
			return nil, fmt.Errorf("%w: line %d: bad counter name %q", ErrMalformed, n+1, name)
		}
		if seen[name] {
			return nil, fmt.Errorf("%w: line %d: counter %s repeated", ErrMalformed, n+1, name)
		}
		seen[name] = true
		// Base 10, no sign: all the kernel prints, and all ParseUint takes.
		value, err := strconv.ParseUint(string(fields[1]), 10, 64)
		if err != nil {
			return nil, fmt.Errorf("%w: line %d: bad value %q for %s", ErrMalformed, n+1, fields[1], name)
		}
		if len(counters) == maxCounters {
			return nil, fmt.Errorf("%w: more than %d counters", ErrMalformed, maxCounters)
		}
		counters = append(counters, Counter{Name: name, Value: value})
	}
	if len(counters) == 0 {
		return nil, fmt.Errorf("%w: no counters", ErrMalformed)
	}
	return counters, nil
}

// validName accepts what the kernel's snmp tables use: an ASCII letter, then
// letters and digits. It keeps odd bytes out of metric names and help text.
func validName(s string) bool {
	if len(s) == 0 || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'A' && c <= 'Z', c >= 'a' && c <= 'z':
		case c >= '0' && c <= '9' && i > 0:
		default:
			return false
		}
	}
	return true
}
