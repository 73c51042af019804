package main

import (
	"bufio"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"

	"github.com/ipsec-exporter/ipsec_exporter/bench"
)

// span is an address range the lab printed: a kernel symbol, a trampoline
// or a program's JIT image.
type span struct {
	start, end uint64
	symbol     string
	category   string
	hook       string // "kind target" of a program
}

// spans is a window's ranges sorted by start, for lookups by address.
type spans []span

func newSpans(recs []bench.Record) spans {
	s := make(spans, 0, len(recs))
	for _, r := range recs {
		if r.End > r.Start {
			s = append(s, span{start: r.Start, end: r.End, symbol: r.Symbol, category: r.Category, hook: r.Hook})
		}
	}
	sort.Slice(s, func(i, j int) bool { return s[i].start < s[j].start })
	return s
}

// find returns the range holding addr (the innermost, i.e. the latest
// starting one, if ranges nest), or nil: the rest of the kernel.
func (s spans) find(addr uint64) *span {
	i := sort.Search(len(s), func(i int) bool { return s[i].start > addr })
	for j := i - 1; j >= 0 && j >= i-8; j-- {
		if addr < s[j].end {
			return &s[j]
		}
	}
	return nil
}

func (p *span) cat() string {
	if p == nil {
		return ""
	}
	return p.category
}

// windowCost is what insnprof charged to one window.
type windowCost struct {
	insns, kernel, user uint64
	rep, lock           uint64 // all of the guest
	userRep, userLock   uint64
	hookRep, hookLock   uint64            // inside hook machinery (categories bench.Machinery says)
	categories          map[string]uint64 // kernel instructions by category of the code executed ("": the rest)
	programs            map[string]*programCost
	hooks               map[string]*hookCost
}

// programCost is one program's share: its own instructions, what the
// functions it calls executed, and how often it was entered.
type programCost struct {
	hook          string
	body, helpers uint64
	runs          uint64
}

// hookCost is everything one hook cost, charged from the call into it:
// trampoline or kprobe entry, the programs, their helpers, the return
// path; for a trampoline that calls the traced function back (fexit), the
// function's own instructions are taken out.
type hookCost struct {
	insns   uint64
	entries uint64
}

// dumpLine kinds of bench/qemu/insnprof.c's output.
type tbLine struct {
	vaddr     uint64
	n, execs  uint64
	rep, lock uint64
}

type edgeLine struct {
	from, to     uint64
	calls, insns uint64
}

// readProfile reads insnprof's output and charges each window (by its
// closing mark) with rangesOf(mark).
func readProfile(r io.Reader, rangesOf func(mark int) spans) (map[int]*windowCost, error) {
	out := map[int]*windowCost{}
	s := bufio.NewScanner(r)
	s.Buffer(make([]byte, 1<<16), 1<<20)
	var (
		cur   *windowCost
		mark  int
		tbs   []tbLine
		edges []edgeLine
	)
	for s.Scan() {
		f := strings.Fields(s.Text())
		if len(f) == 0 || f[0] == "insnprof" {
			continue
		}
		var v []uint64
		var err error
		switch f[0] {
		case "mark": // mark SEQ insns N kernel N user N rep N lock N
			if len(f) == 12 {
				v, err = fields([]string{f[1], f[3], f[5], f[7], f[9], f[11]}, 10, 10, 10, 10, 10, 10)
			} else {
				err = errShort
			}
			if err == nil {
				mark = int(v[0])
				cur = &windowCost{insns: v[1], kernel: v[2], user: v[3], rep: v[4], lock: v[5]}
				tbs, edges = tbs[:0], edges[:0]
			}
		case "t": // t VADDR NINSNS EXECS REP LOCK
			if v, err = fields(f[1:], 16, 10, 10, 10, 10); err == nil && cur != nil {
				tbs = append(tbs, tbLine{vaddr: v[0], n: v[1], execs: v[2], rep: v[3], lock: v[4]})
			}
		case "e", "h": // e SITE CALLEE CALLS INSNS
			if v, err = fields(f[1:], 16, 16, 10, 10); err == nil && cur != nil {
				edges = append(edges, edgeLine{from: v[0], to: v[1], calls: v[2], insns: v[3]})
			}
		case "end":
			if cur != nil {
				cur.charge(rangesOf(mark), tbs, edges)
				out[mark] = cur
				cur = nil
			}
		default:
			err = fmt.Errorf("unknown line")
		}
		if err != nil {
			return nil, fmt.Errorf("insnprof line %q: %w", s.Text(), err)
		}
	}
	// A dump cut short (the VM killed while writing) has no end: dropped.
	return out, s.Err()
}

var errShort = fmt.Errorf("wrong number of fields")

// fields parses each field in the base given for it.
func fields(f []string, bases ...int) ([]uint64, error) {
	if len(f) != len(bases) {
		return nil, errShort
	}
	out := make([]uint64, len(f))
	for i, b := range bases {
		v, err := strconv.ParseUint(f[i], b, 64)
		if err != nil {
			return nil, err
		}
		out[i] = v
	}
	return out, nil
}

// charge attributes one window's blocks and edges to categories, programs
// and hooks.
func (w *windowCost) charge(rs spans, tbs []tbLine, edges []edgeLine) {
	rs = rs.withEntries(edges)
	w.categories = map[string]uint64{}
	w.programs = map[string]*programCost{}
	w.hooks = map[string]*hookCost{}
	var kernelRep, kernelLock uint64
	for _, t := range tbs {
		sp := rs.find(t.vaddr)
		insns := t.n * t.execs
		w.categories[sp.cat()] += insns
		kernelRep += t.rep
		kernelLock += t.lock
		if bench.Machinery(sp.cat()) {
			w.hookRep += t.rep
			w.hookLock += t.lock
		}
		if sp.cat() == bench.CategoryProgram {
			w.program(sp).body += insns
		}
	}
	w.userRep, w.userLock = w.rep-min(w.rep, kernelRep), w.lock-min(w.lock, kernelLock)

	// A trampoline serves the function whose call site entered it; a call
	// from the trampoline back into that function is the function's own
	// work (fexit calls the original), not the hook's.
	serves := map[uint64]*span{}
	for _, e := range edges {
		site, callee := rs.find(e.from), rs.find(e.to)
		if callee.cat() == bench.CategoryTrampoline && !bench.Machinery(site.cat()) && site != nil {
			serves[callee.start] = site
		}
	}
	own := map[string]uint64{} // the traced functions' own work, by hook
	for _, e := range edges {
		site, callee := rs.find(e.from), rs.find(e.to)
		if site.cat() == bench.CategoryProgram {
			w.program(site).helpers += e.insns
		}
		if callee.cat() == bench.CategoryProgram && e.to == callee.start {
			w.program(callee).runs += e.calls
		}
		if bench.Machinery(callee.cat()) && !bench.Machinery(site.cat()) {
			h := w.hook(hookName(site, callee))
			h.insns += e.insns
			h.entries += e.calls
		}
		if site.cat() == bench.CategoryTrampoline {
			if f := serves[site.start]; f != nil && callee != nil && callee.start == f.start {
				own[hookName(f, site)] += e.insns
			}
		}
	}
	// Taken out once all entries are in: the edges come in no order.
	for name, n := range own {
		h := w.hook(name)
		h.insns -= min(h.insns, n)
	}
}

// entrySite is how far into a function its patched entry call sits: the
// fentry call is its first instruction, after an endbr64 (4 bytes) on
// kernels built with IBT (6.12).
const entrySite = 16

// withEntries adds the trampolines the window's calls reveal. The lab does
// not print them (that would take a kallsyms read per window): a call made
// from the first bytes of a function a program is attached to into code
// no range names is that function's patched entry calling its BPF
// trampoline (fentry/fexit) or its ftrace trampoline (kprobe), whatever
// range the address seems to fall in (the last function of a module may
// seem to reach into the BPF area). Either is
// at most a page, and ends where the next known range starts.
func (s spans) withEntries(edges []edgeLine) spans {
	kinds := map[string]string{}
	for _, sp := range s {
		if sp.category != bench.CategoryProgram {
			continue
		}
		kind, target, _ := strings.Cut(sp.hook, " ")
		switch kind {
		case "fentry", "fexit":
			kinds[target] = bench.CategoryTrampoline
		case "kprobe", "kretprobe":
			kinds[target] = bench.CategoryKprobe
		}
	}
	seen := map[uint64]bool{}
	out := s
	for _, e := range edges {
		site := s.find(e.from)
		if site == nil || e.from-site.start >= entrySite || seen[e.to] || bench.Machinery(s.find(e.to).cat()) {
			continue
		}
		base, _, _ := strings.Cut(site.symbol, ".")
		if c, ok := kinds[base]; ok {
			seen[e.to] = true
			out = append(out, span{start: e.to, end: e.to + 4096, symbol: "entry of " + base, category: c})
		}
	}
	if len(out) == len(s) {
		return s
	}
	sort.Slice(out, func(i, j int) bool { return out[i].start < out[j].start })
	for i := range out[:len(out)-1] {
		out[i].end = min(out[i].end, max(out[i+1].start, out[i].start+1))
	}
	return out
}

// hookName names the hook an entry edge goes into: the tracepoint, "tc",
// or the kernel function whose call site entered the hook machinery.
func hookName(site, callee *span) string {
	switch {
	case callee.cat() == bench.CategoryTracepoint:
		name := callee.symbol
		for _, p := range []string{"__traceiter_", "__SCT__tp_func_", "__bpf_trace_"} {
			name = strings.TrimPrefix(name, p)
		}
		return "tracepoint " + name
	case callee.cat() == bench.CategoryTC || (callee.cat() == bench.CategoryProgram && callee.hook == "tc"):
		return "tc"
	case site == nil:
		return "?"
	}
	return site.symbol
}

func (w *windowCost) program(sp *span) *programCost {
	p := w.programs[sp.symbol]
	if p == nil {
		p = &programCost{hook: sp.hook}
		w.programs[sp.symbol] = p
	}
	return p
}

func (w *windowCost) hook(name string) *hookCost {
	h := w.hooks[name]
	if h == nil {
		h = &hookCost{}
		w.hooks[name] = h
	}
	return h
}

// hooksAllIn is the sum over the window's hooks.
func (w *windowCost) hooksAllIn() (insns, entries uint64) {
	for _, h := range w.hooks {
		insns += h.insns
		entries += h.entries
	}
	return insns, entries
}

// dropRuns is the part of programRuns at the kfree_skb tracepoint: drops.
func (w *windowCost) dropRuns() uint64 {
	var n uint64
	for _, p := range w.programs {
		if strings.Contains(p.hook, "kfree_skb") {
			n += p.runs
		}
	}
	return n
}

// programRuns is how often the window's programs were entered.
func (w *windowCost) programRuns() uint64 {
	var n uint64
	for _, p := range w.programs {
		n += p.runs
	}
	return n
}
