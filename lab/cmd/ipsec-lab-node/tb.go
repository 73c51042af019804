package main

import (
	"fmt"
	"log"
	"sync"
	"testing"
)

// tb lets the agent use lab/scenario, whose building blocks take a
// testing.TB. Only the methods scenario calls are implemented; the embedded
// nil interface supplies the unexported one. Fatal panics with a fatal value
// that step recovers, so one failed action never stops the lab.
type tb struct {
	testing.TB
	name     string
	quiet    bool // drop Logf (expected errors in failure loops)
	mu       sync.Mutex
	cleanups []func()
}

type fatal struct{ msg string }

func newTB(name string) *tb { return &tb{name: name} }

func (t *tb) Helper()      {}
func (t *tb) Name() string { return t.name }
func (t *tb) Logf(format string, args ...any) {
	if !t.quiet {
		log.Printf("%s: "+format, append([]any{t.name}, args...)...)
	}
}
func (t *tb) Errorf(format string, args ...any) { t.Logf("error: "+format, args...) }
func (t *tb) Fatalf(format string, args ...any) { panic(fatal{fmt.Sprintf(format, args...)}) }
func (t *tb) Fatal(args ...any)                 { panic(fatal{fmt.Sprint(args...)}) }
func (t *tb) Skip(args ...any)                  { panic(fatal{"skip: " + fmt.Sprint(args...)}) }
func (t *tb) Cleanup(f func())                  { t.mu.Lock(); t.cleanups = append(t.cleanups, f); t.mu.Unlock() }

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
