package main

import (
	"math"
	"sort"

	"github.com/ipsec-exporter/ipsec_exporter/bench"
)

// roundCost is one variant's window in one round, normalised per packet
// against "none" of the same workload and round: the variant's extra
// instructions per packet (under icount, guest time is instructions) and
// the throughput it loses.
type roundCost struct {
	perPacket float64 // guest instructions per packet, everything
	extra     float64 // perPacket - none's perPacket, same round
	loss      float64 // extra / perPacket: the share of the time the programs took
	none      float64 // none's guest instructions per packet, same workload and round
	plugin    *windowCost
	packets   uint64
}

// variantCost is a variant's rounds in one workload on one kernel.
type variantCost struct {
	rounds []roundCost
}

func (v *variantCost) median(f func(roundCost) float64) float64 {
	var xs []float64
	for _, r := range v.rounds {
		if x := f(r); !math.IsNaN(x) {
			xs = append(xs, x)
		}
	}
	return median(xs)
}

// extra is the median over rounds of the extra instructions per packet.
func (v *variantCost) extra() float64 { return v.median(func(r roundCost) float64 { return r.extra }) }

func (v *variantCost) loss() float64 { return v.median(func(r roundCost) float64 { return r.loss }) }

// hookLoss is the throughput the hooks cost by insnprof's charge: per
// round, hooks/pkt over (none's insns/pkt + hooks/pkt), median over rounds.
// Unlike loss it does not hold the path's own variation between windows
// (bulk TCP's segment and ACK counts differ from round to round by more
// than the programs cost); it leaves out what the hooks cost the path
// indirectly, which the instruction-counted model does not have (caches).
func (v *variantCost) hookLoss() float64 {
	return v.median(func(r roundCost) float64 {
		if r.plugin == nil || r.packets == 0 || math.IsNaN(r.none) {
			return math.NaN()
		}
		insns, _ := r.plugin.hooksAllIn()
		h := float64(insns) / float64(r.packets)
		return h / (r.none + h)
	})
}

func (v *variantCost) perPacket() float64 {
	return v.median(func(r roundCost) float64 { return r.perPacket })
}

// pluginPerPacket is the median over rounds of f(window) per packet, NaN
// without a profile.
func (v *variantCost) pluginPerPacket(f func(*windowCost) float64) float64 {
	return v.median(func(r roundCost) float64 {
		if r.plugin == nil || r.packets == 0 {
			return math.NaN()
		}
		return f(r.plugin) / float64(r.packets)
	})
}

// hooksPerPacket is the median over rounds of what insnprof charged the
// hooks, per packet: NaN without a profile.
func (v *variantCost) hooksPerPacket() float64 {
	return v.pluginPerPacket(func(w *windowCost) float64 {
		insns, _ := w.hooksAllIn()
		return float64(insns)
	})
}

// workloadCosts is kernel -> workload -> variant -> cost, from the window
// records and the insnprof profiles.
type workloadCosts map[string]map[string]map[string]*variantCost

func (r *run) workloadCosts() workloadCosts {
	out := workloadCosts{}
	for _, k := range r.kernelList() {
		out[k] = map[string]map[string]*variantCost{}
		type key struct {
			workload string
			round    int
		}
		none, noneTime := map[key]float64{}, map[key]float64{}
		wins := r.filter("window", k)
		for _, w := range wins {
			if w.Variant == "none" && w.Packets > 0 {
				none[key{w.Workload, w.Round}] = w.Seconds * 1e9 / float64(w.Packets)
				noneTime[key{w.Workload, w.Round}] = w.Seconds * 1e9
			}
		}
		byBytes := map[string]bool{}
		for _, rec := range r.filter("workload", k) {
			byBytes[rec.Workload] = rec.Normalise == "byte"
		}
		for _, w := range wins {
			if out[k][w.Workload] == nil {
				out[k][w.Workload] = map[string]*variantCost{}
			}
			vc := out[k][w.Workload][w.Variant]
			if vc == nil {
				vc = &variantCost{}
				out[k][w.Workload][w.Variant] = vc
			}
			rc := roundCost{extra: math.NaN(), loss: math.NaN(), none: math.NaN(), packets: w.Packets, perPacket: math.NaN()}
			if w.Packets > 0 && w.Seconds > 0 {
				rc.perPacket = w.Seconds * 1e9 / float64(w.Packets)
				if n, ok := none[key{w.Workload, w.Round}]; ok {
					rc.none = n
					if byBytes[w.Workload] {
						// Same bytes, packets not a fixed unit: the extra
						// time of the round, over this window's packets.
						t := noneTime[key{w.Workload, w.Round}]
						rc.extra = (w.Seconds*1e9 - t) / float64(w.Packets)
						rc.loss = (w.Seconds*1e9 - t) / (w.Seconds * 1e9)
					} else {
						rc.extra = rc.perPacket - n
						rc.loss = rc.extra / rc.perPacket
					}
				}
			}
			if p := r.profiles[k]; p != nil {
				rc.plugin = p[w.Mark]
			}
			vc.rounds = append(vc.rounds, rc)
		}
	}
	return out
}

func (c workloadCosts) get(kernel, workload, variant string) *variantCost {
	return c[kernel][workload][variant]
}

// hookRow is one hook's cost per packet in a variant, summed over rounds
// and divided by their packets.
type hookRow struct {
	name               string
	entries, insns     float64
	programs, programN float64 // the programs attached there: body + helpers, and their runs
}

// hookRows breaks a variant's profile down by hook, largest first.
func hookRows(vc *variantCost) []hookRow {
	rows := map[string]*hookRow{}
	var packets float64
	for _, rd := range vc.rounds {
		if rd.plugin == nil {
			continue
		}
		packets += float64(rd.packets)
		for name, h := range rd.plugin.hooks {
			row := rows[name]
			if row == nil {
				row = &hookRow{name: name}
				rows[name] = row
			}
			row.entries += float64(h.entries)
			row.insns += float64(h.insns)
		}
		for _, p := range rd.plugin.programs {
			name := programHook(p.hook)
			row := rows[name]
			if row == nil {
				row = &hookRow{name: name}
				rows[name] = row
			}
			row.programs += float64(p.body + p.helpers)
			row.programN += float64(p.runs)
		}
	}
	out := make([]hookRow, 0, len(rows))
	for _, row := range rows {
		if packets > 0 {
			row.entries /= packets
			row.insns /= packets
			row.programs /= packets
			row.programN /= packets
		}
		out = append(out, *row)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].insns != out[j].insns {
			return out[i].insns > out[j].insns
		}
		return out[i].name < out[j].name
	})
	return out
}

// programHook is the hook name (as hookName gives it) of a program's
// "kind target".
func programHook(hook string) string {
	kind, target := hook, ""
	for i := range hook {
		if hook[i] == ' ' {
			kind, target = hook[:i], hook[i+1:]
			break
		}
	}
	switch kind {
	case "tc":
		return "tc"
	case "tp_btf", "raw_tracepoint", "tracepoint":
		return "tracepoint " + target
	}
	if target == "" {
		return hook
	}
	return target
}

// direction says which side of IPsec a hooked kernel function is on, from
// the kernel facts of bpf/README.md and shared/design/verdict-cost.md 1.1
// (6.1 and 6.12): a node pays one side per packet. Functions on both
// sides, and any this table does not know, are "both".
func direction(hook string) string {
	switch hook {
	case "xfrm_input", "xfrm_rcv_cb", "xfrm4_rcv_cb", "xfrm6_rcv_cb", "xfrm_replay_check", "xfrm_replay_recheck",
		"xfrm_replay_advance", "xfrm_state_lookup", "xfrm_input_state_lookup", "xfrm_audit_state_icvfail",
		"xfrm_audit_state_notfound", "xfrm_audit_state_replay", "xfrm4_transport_finish", "xfrm6_transport_finish",
		"gro_cells_receive", "xfrm_input_resume", "esp_input", "esp6_input", "esp_input_done", "esp_input_done2":
		return "decrypt"
	case "xfrm_output", "xfrm_output_resume", "xfrm_replay_overflow", "__ip_local_out", "__ip6_local_out",
		"xfrm_lookup_with_ifid", "xfrm_audit_state_replay_overflow", "xfrm_local_error", "esp_output",
		"esp6_output", "esp_output_done", "esp_output_tail", "skb_dst_pop", "dst_discard_out":
		return "encrypt"
	}
	return "both"
}

// categoryRows are a variant's kernel instructions per packet by category
// of the code executed, next to none's of the same rounds.
func categoryPerPacket(vc *variantCost) map[string]float64 {
	out := map[string]float64{}
	var packets float64
	for _, rd := range vc.rounds {
		if rd.plugin == nil {
			continue
		}
		packets += float64(rd.packets)
		for c, n := range rd.plugin.categories {
			out[c] += float64(n)
		}
		out["user"] += float64(rd.plugin.user)
	}
	for c := range out {
		out[c] /= packets
	}
	return out
}

var categoryOrder = []string{bench.CategoryProgram, bench.CategoryTrampoline, bench.CategoryEnterExit,
	bench.CategoryKprobe, bench.CategoryTracepoint, bench.CategoryTC, bench.CategoryMap, bench.CategoryProbeRead,
	bench.CategoryHelper, bench.CategoryTarget, bench.CategoryXfrm, "", "user"}
