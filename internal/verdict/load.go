package verdict

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"

	"github.com/ipsec-exporter/ipsec_exporter/internal/pin"
)

// linksDir is the pin directory's subdirectory of the links.
const linksDir = "links"

// Hook modes.
const (
	ModeAuto   = "auto"
	ModeFentry = "fentry"
	ModeKprobe = "kprobe"
)

// Options say how to load the verdict programs.
type Options struct {
	// Mode is auto (fentry where it loads and attaches, else kprobe),
	// fentry or kprobe.
	Mode string
	// MapSize is the number of counter keys; DefaultMapSize if zero.
	MapSize uint32
	// Strict makes every hook that does not attach an error.
	Strict bool
	// Pins is where the counter maps and the links are pinned so that they
	// outlive the process (--bpf.pin-path): the next Load continues their
	// counts, and the programs count while no exporter runs. The zero Dir
	// pins nothing.
	Pins   pin.Dir
	Logger *slog.Logger
}

// Hook is one program and where it is attached.
type Hook struct {
	Program  string // the program's name in bpf/xfrm_verdict.bpf.c
	Kind     string // fentry, fexit, tp_btf, kprobe, kretprobe, raw_tracepoint
	Target   string // kernel function or tracepoint
	Attached bool
	Err      error // why it is not attached
	prog     *ebpf.Program
	link     link.Link
}

// Verdicts are the loaded and attached programs with their maps.
type Verdicts struct {
	*Maps
	mode      string
	hooks     []*Hook
	links     []link.Link
	pins      pin.Dir // of the links
	pinned    []string
	warnedPin bool // a link that could not be pinned was logged at warning level
	logger    *slog.Logger
}

// ErrRequiredHook is the cause of a Load error when a hook without which no
// verdict is possible does not attach (errors.Is).
var ErrRequiredHook = errors.New("required hook not attached")

// required targets: without them no verdict is possible. A mode is only
// chosen by auto when all of these attach.
var required = []string{"xfrm_replay_recheck", "xfrm_rcv_cb", "xfrm_replay_overflow", "kfree_skb"}

// countsOK are the targets whose programs count the ok: they attach last
// and detach first, so that no ok is counted whose later drop the drop
// programs would not see.
var countsOK = []string{"xfrm_replay_recheck", "xfrm_replay_overflow"}

// alternatives: one target of each group is enough (the kernel has one or
// the other); the missing one is not a failure.
var alternatives [][]string

// Load loads the verdict maps and programs and attaches the programs. It
// returns an error when nothing can count (maps or the required hooks fail),
// or, with Strict, when any hook fails. Call it once per process: fentry
// attachment costs a trampoline rebuild per hook.
func Load(opts Options) (*Verdicts, error) {
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if opts.MapSize == 0 {
		opts.MapSize = DefaultMapSize
	}
	spec, err := loadXfrmVerdict()
	if err != nil {
		return nil, fmt.Errorf("reading embedded BPF object: %w", err)
	}
	maps, err := newMaps(spec, opts.MapSize, opts.Pins, logger)
	if err != nil {
		return nil, err
	}
	links := opts.Pins.Join(linksDir)
	// The programs' map specs must match the created maps to replace them,
	// and their constants the table's size.
	if err := sizeTable(spec, opts.MapSize); err != nil {
		_ = maps.Close()
		return nil, err
	}
	modes := []string{opts.Mode}
	switch opts.Mode {
	case ModeAuto, "":
		modes = []string{ModeFentry, ModeKprobe}
	case ModeFentry, ModeKprobe:
	default:
		_ = maps.Close()
		return nil, fmt.Errorf("unknown hook mode %q (want auto, fentry or kprobe)", opts.Mode)
	}
	var errs []error
	for _, mode := range modes {
		start := time.Now()
		v := &Verdicts{Maps: maps, mode: mode, pins: links, logger: logger}
		err := v.attach(spec, mode, logger)
		if err == nil && opts.Strict {
			err = v.strictCheck()
		}
		if err == nil {
			v.pruneLinks()
			logger.Info("BPF verdict programs attached", "mode", mode, "attached", v.attachedCount(),
				"hooks", len(v.hooks), "pinned", len(v.pinned), "duration_seconds", time.Since(start).Seconds())
			return v, nil
		}
		v.detach()
		v.unpin()
		errs = append(errs, fmt.Errorf("%s: %w", mode, err))
		if len(modes) > 1 {
			logger.Debug("BPF hook mode unusable, trying the next", "mode", mode, "err", err)
		}
	}
	_ = maps.Close()
	return nil, errors.Join(errs...)
}

// Mode is the hook mode in use: fentry or kprobe.
func (v *Verdicts) Mode() string { return v.mode }

// Hooks lists every program of the mode in use and whether it is attached.
func (v *Verdicts) Hooks() []Hook {
	out := make([]Hook, len(v.hooks))
	for i, h := range v.hooks {
		out[i] = *h
	}
	return out
}

// ProgramStats returns run time and count per attached program (non-zero
// only while kernel.bpf_stats_enabled is 1).
func (v *Verdicts) ProgramStats() map[string]*ebpf.ProgramStats {
	out := map[string]*ebpf.ProgramStats{}
	for _, h := range v.hooks {
		if h.prog == nil {
			continue
		}
		if s, err := h.prog.Stats(); err == nil {
			out[h.Program] = s
		}
	}
	return out
}

// Missed returns, per attached program, the runs the kernel skipped: BPF
// recursion misses (another program of the same kind was running on the
// CPU, 5.12+) plus, for kprobes, the kprobe's own misses (a kprobe hit
// inside another kprobe handler, reported from 6.7). Each miss can cost a
// verdict; fentry programs only miss when the same program nests.
func (v *Verdicts) Missed() map[string]uint64 {
	out := map[string]uint64{}
	for _, h := range v.hooks {
		if h.prog == nil {
			continue
		}
		var n uint64
		if s, err := h.prog.Stats(); err == nil {
			n += s.RecursionMisses
		}
		if info, err := h.link.Info(); err == nil {
			if pe := info.PerfEvent(); pe != nil {
				if kp := pe.Kprobe(); kp != nil {
					n += kp.Missed
				}
			}
		}
		out[h.Program] = n
	}
	return out
}

// Close detaches every program and frees the maps, except what is pinned:
// pinned links stay attached and keep counting into the pinned maps until
// the next Load takes them over or their pins are removed.
func (v *Verdicts) Close() error {
	v.detach()
	return v.Maps.Close()
}

// unpin removes the links this Load pinned (a mode that failed).
func (v *Verdicts) unpin() {
	for _, name := range v.pinned {
		_ = v.pins.Remove(name)
	}
	v.pinned = nil
}

// pruneLinks unpins the links of programs this Load did not attach: another
// mode's, or programs an earlier version had. Left pinned they would go on
// counting beside ours.
func (v *Verdicts) pruneLinks() {
	removed, err := v.pins.Prune(v.pinned)
	if err != nil {
		v.logger.Warn("unpinning links of an earlier exporter", "err", err)
	}
	if len(removed) > 0 {
		v.logger.Info("unpinned links the programs in use do not have", "links", removed)
	}
}

func (v *Verdicts) detach() {
	// The ok counters first (attached last), so that no ok is counted
	// whose drop goes unseen.
	for i := len(v.links) - 1; i >= 0; i-- {
		_ = v.links[i].Close()
	}
	v.links = nil
	for _, h := range v.hooks {
		if h.prog != nil {
			_ = h.prog.Close()
			h.prog, h.link = nil, nil
		}
		h.Attached = false
	}
}

func (v *Verdicts) attachedCount() int {
	n := 0
	for _, h := range v.hooks {
		if h.Attached {
			n++
		}
	}
	return n
}

// modeKinds are the program kinds (section prefixes) of each mode.
var modeKinds = map[string][]string{
	ModeFentry: {"fentry", "fexit", "tp_btf"},
	ModeKprobe: {"kprobe", "kretprobe", "raw_tracepoint"},
}

// hooksFor lists the mode's programs in attach order: the programs that
// classify drops first, then those that count the ok.
func hooksFor(spec *ebpf.CollectionSpec, mode string) []*Hook {
	var hooks []*Hook
	for name, p := range spec.Programs {
		kind, target, ok := strings.Cut(p.SectionName, "/")
		if !ok || !slices.Contains(modeKinds[mode], kind) {
			continue
		}
		hooks = append(hooks, &Hook{Program: name, Kind: kind, Target: target})
	}
	rank := func(h *Hook) int {
		if slices.Contains(countsOK, h.Target) {
			return 1
		}
		return 0
	}
	slices.SortFunc(hooks, func(a, b *Hook) int {
		if r := rank(a) - rank(b); r != 0 {
			return r
		}
		return strings.Compare(a.Program, b.Program)
	})
	return hooks
}

// attach loads and attaches each program of the mode on its own, so that one
// missing kernel function costs only its hook. It fails when a required
// target does not attach.
func (v *Verdicts) attach(spec *ebpf.CollectionSpec, mode string, logger *slog.Logger) error {
	v.hooks = hooksFor(spec, mode)
	for _, h := range v.hooks {
		h.Err = v.attachOne(spec, h)
		h.Attached = h.Err == nil
		if h.Err == nil {
			continue
		}
		if slices.Contains(required, h.Target) {
			return fmt.Errorf("%w: %s/%s: %w", ErrRequiredHook, h.Kind, h.Target, h.Err)
		}
	}
	for _, h := range v.hooks {
		if h.Attached {
			continue
		}
		if v.alternativeAttached(h) {
			logger.Debug("BPF hook not attached, its alternative is", "program", h.Program,
				"hook", h.Kind+"/"+h.Target, "reason", h.Err)
			continue
		}
		logger.Warn("BPF hook not attached, verdicts lose what it gives", "program", h.Program,
			"hook", h.Kind+"/"+h.Target, "reason", h.Err)
	}
	return nil
}

func (v *Verdicts) alternativeAttached(h *Hook) bool {
	for _, group := range alternatives {
		if !slices.Contains(group, h.Target) {
			continue
		}
		for _, o := range v.hooks {
			if o != h && o.Kind == h.Kind && o.Attached && slices.Contains(group, o.Target) {
				return true
			}
		}
	}
	return false
}

func (v *Verdicts) strictCheck() error {
	var errs []error
	for _, h := range v.hooks {
		if !h.Attached && !v.alternativeAttached(h) {
			errs = append(errs, fmt.Errorf("hook %s/%s: %w", h.Kind, h.Target, h.Err))
		}
	}
	return errors.Join(errs...)
}

func (v *Verdicts) attachOne(spec *ebpf.CollectionSpec, h *Hook) error {
	one := &ebpf.CollectionSpec{
		Maps:      spec.Maps,
		Programs:  map[string]*ebpf.ProgramSpec{h.Program: spec.Programs[h.Program]},
		Variables: spec.Variables, // the table's size (sizeTable): .rodata is made from them
		Types:     spec.Types,
		ByteOrder: spec.ByteOrder,
	}
	coll, err := ebpf.NewCollectionWithOptions(one, ebpf.CollectionOptions{MapReplacements: v.replacements()})
	if err != nil {
		return fmt.Errorf("loading: %w", loadError(err))
	}
	prog := coll.DetachProgram(h.Program)
	coll.Close() // the maps stay: they are the replacements, owned by v.Maps
	var l link.Link
	switch h.Kind {
	case "fentry", "fexit", "tp_btf":
		l, err = link.AttachTracing(link.TracingOptions{Program: prog})
	case "kprobe":
		l, err = link.Kprobe(h.Target, prog, nil)
	case "kretprobe":
		l, err = link.Kretprobe(h.Target, prog, nil)
	case "raw_tracepoint":
		l, err = link.AttachRawTracepoint(link.RawTracepointOptions{Name: h.Target, Program: prog})
	default:
		err = fmt.Errorf("unknown program kind %q", h.Kind)
	}
	if err != nil {
		_ = prog.Close()
		return fmt.Errorf("attaching: %w", err)
	}
	h.prog, h.link = prog, l
	v.links = append(v.links, l)
	// The link pinned by the previous exporter is replaced only now that
	// ours counts: between the two, a packet may count twice, never zero
	// times.
	if err := v.pins.PinLink(h.Program, l); err != nil {
		// Kprobes are links that can be pinned from 5.15 (perf_event
		// bpf_link); before, every hook fails the same way: say it once.
		level := slog.LevelDebug
		if !v.warnedPin {
			level, v.warnedPin = slog.LevelWarn, true
		}
		v.logger.Log(context.Background(), level, "verdict link not pinned: its program stops counting when the exporter stops (more at debug level)",
			"program", h.Program, "err", err)
		_ = v.pins.Remove(h.Program) // not the old program beside ours
		return nil
	}
	if v.pins.Enabled() {
		v.pinned = append(v.pinned, h.Program)
	}
	return nil
}

// loadError keeps the verifier's last lines: the whole log is long, the end
// says why.
func loadError(err error) error {
	var ve *ebpf.VerifierError
	if errors.As(err, &ve) && len(ve.Log) > 3 {
		return fmt.Errorf("%w (verifier: %s)", ve.Cause, strings.Join(ve.Log[len(ve.Log)-3:], " | "))
	}
	return err
}
