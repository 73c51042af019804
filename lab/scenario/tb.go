package scenario

// TB is what the building blocks use of a test: the methods of testing.TB
// they call, and no more. Tests pass their *testing.T; `make lab`'s node
// agent (lab/cmd/ipsec-lab-node), which has no test, passes a type of its
// own. A block that starts calling another method (t.TempDir, t.Setenv,
// t.Context) has to add it here, and the agent then fails to compile until
// it implements it, instead of panicking inside the lab.
type TB interface {
	Helper()
	Logf(format string, args ...any)
	Errorf(format string, args ...any)
	Fatal(args ...any)
	Fatalf(format string, args ...any)
	Skip(args ...any)
	Failed() bool
	Cleanup(func())
}
