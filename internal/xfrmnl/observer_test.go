package xfrmnl

import (
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/ipsec-exporter/ipsec_exporter/internal/netnsx"
	"github.com/ipsec-exporter/ipsec_exporter/internal/netnsx/netnsxtest"
)

// policyView is an observer that keeps the policies of each namespace as
// OnDump and OnNotification make them.
type policyView struct {
	mu    sync.Mutex
	dumps int
	view  map[string]map[policyKey]bool
}

func (v *policyView) OnDump(ns netnsx.Namespace, _ []SA, pols []Policy) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.dumps++
	m := map[policyKey]bool{}
	for i := range pols {
		m[keyOfPolicy(&pols[i])] = true
	}
	v.view[ns.Name] = m
}

func (v *policyView) OnNotification(ns netnsx.Namespace, n Notification) {
	v.mu.Lock()
	defer v.mu.Unlock()
	m := v.view[ns.Name]
	switch n.Event {
	case EventPolicyAdded, EventPolicyUpdated:
		m[keyOfPolicy(n.Policy)] = true
	case EventPolicyDeleted, EventPolicyHardExpired:
		delete(m, keyOfPolicy(n.Policy))
	case EventPolicyFlushed:
		for k := range m {
			if k.dir < socketPolicyBase {
				delete(m, k)
			}
		}
	}
}

func (v *policyView) keys(name string) []string {
	v.mu.Lock()
	defer v.mu.Unlock()
	var s []string
	for k := range v.view[name] {
		s = append(s, fmt.Sprint(k))
	}
	slices.Sort(s)
	return s
}

func kernelPolicies(t *testing.T, ns netnsx.Namespace) []string {
	t.Helper()
	c, err := Dial(ns, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.Close() }()
	pols, err := c.Policies()
	if err != nil {
		t.Fatal(err)
	}
	var s []string
	for i := range pols {
		s = append(s, fmt.Sprint(keyOfPolicy(&pols[i])))
	}
	slices.Sort(s)
	return s
}

// TestListenersObserver: an observer of the listeners, added while
// namespaces already hold policies and changes keep coming (adds, deletes,
// a flush) after its first dump was read and before it was delivered, sees
// each namespace's policies as the kernel has them, on the listeners'
// sockets; so does one for a namespace that appears later.
func TestListenersObserver(t *testing.T) {
	dir := t.TempDir()
	a := netnsxtest.New(t, dir, "a")
	ha := netnsxtest.Handle(t, a)
	for i := range 50 {
		if err := ha.XfrmPolicyAdd(policy(i, netlink.XFRM_DIR_OUT)); err != nil {
			t.Fatal(err)
		}
	}
	w, err := netnsx.NewWatcher(netnsx.Config{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = w.Close() }()
	ls := Follow(w, ListenOptions{})
	defer func() { _ = ls.Close() }()

	v := &policyView{view: map[string]map[policyKey]bool{}}
	la, _ := ls.Get(a.ID)
	la.observers.gate.Lock() // the observer's first dump is delivered after the changes
	cancel := ls.Observe(v)
	defer cancel()
	for i := 50; i < 150; i++ {
		if err := ha.XfrmPolicyAdd(policy(i, netlink.XFRM_DIR_OUT)); err != nil {
			t.Fatal(err)
		}
		if i%3 == 0 {
			_ = ha.XfrmPolicyDel(policy(i-20, netlink.XFRM_DIR_OUT)) // gone already after the flush
		}
		if i == 100 {
			if err := ha.XfrmPolicyFlush(); err != nil {
				t.Fatal(err)
			}
		}
	}
	time.Sleep(50 * time.Millisecond) // the listener has them all
	la.observers.gate.Unlock()
	b := netnsxtest.New(t, dir, "b")
	hb := netnsxtest.Handle(t, b)
	for i := range 20 {
		if err := hb.XfrmPolicyAdd(policy(i, netlink.XFRM_DIR_IN)); err != nil {
			t.Fatal(err)
		}
	}
	for _, ns := range []netnsx.Namespace{a, b} {
		want := kernelPolicies(t, ns)
		deadline := time.Now().Add(5 * time.Second)
		for !slices.Equal(v.keys(ns.Name), want) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: the observer sees %d policies, the kernel has %d", ns.Name, len(v.keys(ns.Name)), len(want))
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	if v.dumps < 3 { // a, b and the exporter's own namespace
		t.Errorf("%d dumps delivered, want one per namespace", v.dumps)
	}
}

// TestObserverOverrun: notifications lost to a full socket buffer give the
// observer a new dump, and its view is the kernel's again.
func TestObserverOverrun(t *testing.T) {
	ns := netnsxtest.New(t, "", "ns")
	h := netnsxtest.Handle(t, ns)
	l, err := Listen(ns, ListenOptions{RcvBuf: 1024})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = l.Close() }()
	v := &policyView{view: map[string]map[policyKey]bool{}}
	l.Observe(v)
	waitView := func(what string) {
		t.Helper()
		want := kernelPolicies(t, ns)
		deadline := time.Now().Add(5 * time.Second)
		for !slices.Equal(v.keys(ns.Name), want) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: the observer sees %d policies, the kernel has %d", what, len(v.keys(ns.Name)), len(want))
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	waitView("first dump")
	l.gate.Lock()
	for i := range 200 {
		if err := h.XfrmPolicyAdd(policy(i, netlink.XFRM_DIR_IN)); err != nil {
			l.gate.Unlock()
			t.Fatal(err)
		}
	}
	l.gate.Unlock()
	waitFor(t, l, func(c Counts) bool { return c.Overruns > 0 && c.Resyncs > 0 })
	waitView("after the overrun")
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.dumps < 2 {
		t.Errorf("%d dumps delivered, want a second one after the overrun", v.dumps)
	}
}
