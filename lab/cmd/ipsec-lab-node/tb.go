package main

import (
	"fmt"
	"log"
	"sync"
	"sync/atomic"

	"github.com/ipsec-exporter/ipsec_exporter/lab/scenario"
)

// tb lets the agent use lab/scenario: it implements scenario.TB, the
// methods the building blocks call. Fatal panics with a fatal value that
// step recovers, so one failed action never stops the lab.
type tb struct {
	name     string
	quiet    bool        // drop Logf (expected errors in failure loops)
	failed   atomic.Bool // an Errorf or Fatal happened
	mu       sync.Mutex
	cleanups []func()
}

var _ scenario.TB = (*tb)(nil)

type fatal struct{ msg string }

func newTB(name string) *tb { return &tb{name: name} }

func (t *tb) Helper() {}
func (t *tb) Logf(format string, args ...any) {
	if !t.quiet {
		log.Printf("%s: "+format, append([]any{t.name}, args...)...)
	}
}
func (t *tb) Errorf(format string, args ...any) {
	t.failed.Store(true)
	t.Logf("error: "+format, args...)
}
func (t *tb) Fatalf(format string, args ...any) {
	t.failed.Store(true)
	panic(fatal{fmt.Sprintf(format, args...)})
}
func (t *tb) Fatal(args ...any) { t.failed.Store(true); panic(fatal{fmt.Sprint(args...)}) }
func (t *tb) Skip(args ...any)  { panic(fatal{"skip: " + fmt.Sprint(args...)}) }
func (t *tb) Failed() bool      { return t.failed.Load() }
func (t *tb) Cleanup(f func())  { t.mu.Lock(); t.cleanups = append(t.cleanups, f); t.mu.Unlock() }

// close runs the cleanups in reverse order, like testing does.
func (t *tb) close() {
	t.mu.Lock()
	c := t.cleanups
	t.cleanups = nil
	t.mu.Unlock()
	for i := len(c) - 1; i >= 0; i-- {
		step(t, "cleanup", c[i])
	}
}

// step runs f and turns a Fatal inside it into a logged error.
func step(t *tb, what string, f func()) (ok bool) {
	defer func() {
		if r := recover(); r != nil {
			fe, isFatal := r.(fatal)
			if !isFatal {
				panic(r)
			}
			log.Printf("%s: %s failed: %s", t.name, what, fe.msg)
			ok = false
		}
	}()
	f()
	return true
}
