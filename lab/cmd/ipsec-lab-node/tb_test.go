package main

import "testing"

// The agent's tb stands in for a test in lab/scenario's building blocks:
// what they ask of it must answer as a test would (scenario/ike.go reads
// Failed in its cleanups to decide whether to dump the daemons' logs).
func TestTBReportsFailure(t *testing.T) {
	a := newTB("setup")
	a.quiet = true
	if a.Failed() {
		t.Fatal("a fresh tb says it failed")
	}
	a.Errorf("an error")
	if !a.Failed() {
		t.Error("Errorf did not mark the tb failed")
	}

	b := newTB("step")
	if step(b, "fatal action", func() { b.Fatalf("boom %d", 1) }) {
		t.Error("step reported a Fatalf as success")
	}
	if !b.Failed() {
		t.Error("Fatalf did not mark the tb failed")
	}

	c := newTB("skip")
	if step(c, "skipped action", func() { c.Skip("not here") }) || c.Failed() {
		t.Error("a Skip must stop the step without failing the tb")
	}
}

// Cleanups run in reverse order, each as its own step, like testing's.
func TestTBCleanupsInReverse(t *testing.T) {
	var order []int
	x := newTB("cleanups")
	x.Cleanup(func() { order = append(order, 1) })
	x.Cleanup(func() { x.Fatal("a failing cleanup does not stop the others") })
	x.Cleanup(func() { order = append(order, 3) })
	x.close()
	if len(order) != 2 || order[0] != 3 || order[1] != 1 {
		t.Errorf("cleanups ran as %v, want [3 1]", order)
	}
}
