// Package bench measures what watching IPsec costs: per-packet BPF cost and
// ESP throughput in the lab VM, scrape cost of the kernel-state collectors
// and the exporter's memory. `make bench` (scripts/bench.sh) runs the
// TestLabBench* tests on each lab kernel and the Go benchmarks on the host,
// then bench/cmd/benchreport turns what they printed into BENCHMARKS.md.
// Nothing here is imported by the exporter.
package bench

import (
	"encoding/json"
	"fmt"
)

// Instrument self-check sizes (TestLabBenchInstrument): benchreport checks
// that insnprof charged exactly these.
const (
	InstrumentRuns  = 4000   // BPF_PROG_TEST_RUN repeats per straight-line program
	InstrumentShort = 16     // mov instructions in the short program
	InstrumentLong  = 1040   // and in the long one: 1,024 more x86 instructions per run
	InstrumentReps  = 100000 // rep movsb iterations
	InstrumentLocks = 50000  // lock xadd instructions
)

// Prefix starts every line a lab benchmark prints for the report.
const Prefix = "BENCH "

// Record is one measured figure. Kind says which fields are set:
//   - bpf_cost: Variant, Round, Packets, RunNs, Runs (summed over the set)
//   - bpf_program: Variant, Round, Program, Packets, RunNs, Runs, Insns,
//     Verified, MapCalls, Calls (run figures are deltas over the measured
//     transfer, after a warm-up transfer with the programs attached)
//   - throughput: Variant, Round, Bytes, Seconds, Packets (ESP packets sent)
//   - kstate: Collector (a configuration), Objects, Round, Seconds (the
//     collector's own duration), WallSeconds (the whole HTTP scrape),
//     Mallocs, AllocBytes, Series
//   - rss: Variant, RSSBytes, HWMBytes, Series
//   - window: Workload, Variant, Round, Mark (the insnprof mark that ends
//     it), Packets (on the wire between the two namespaces, both ways),
//     Bytes (payload sent), Seconds (guest time: instructions under icount)
//   - workload, variant: Workload or Variant, Text (what it is, for the
//     report's tables); a workload's Normalise is "byte" where its packets
//     are not a fixed unit (TCP without IPsec leaves as GSO super-packets
//     whose number varies from round to round), else per packet
//   - range: Mark (the window it is valid for; 0: every window of the run),
//     Symbol, Category, Start, End (guest kernel addresses), Hook ("kind
//     target" of a BPF program)
type Record struct {
	Kind        string  `json:"kind"`
	Kernel      string  `json:"kernel"`
	Variant     string  `json:"variant,omitempty"`
	Round       int     `json:"round,omitempty"`
	Program     string  `json:"program,omitempty"`
	Packets     uint64  `json:"packets,omitempty"`
	RunNs       uint64  `json:"run_ns,omitempty"`
	Runs        uint64  `json:"runs,omitempty"`
	Insns       int     `json:"insns,omitempty"`
	Verified    uint32  `json:"verified,omitempty"`
	MapCalls    int     `json:"map_calls,omitempty"`
	Calls       string  `json:"calls,omitempty"`
	Bytes       int64   `json:"bytes,omitempty"`
	Seconds     float64 `json:"seconds,omitempty"`
	WallSeconds float64 `json:"wall_seconds,omitempty"`
	Collector   string  `json:"collector,omitempty"`
	Objects     int     `json:"objects,omitempty"`
	Mallocs     uint64  `json:"mallocs,omitempty"`
	AllocBytes  uint64  `json:"alloc_bytes,omitempty"`
	Series      int     `json:"series,omitempty"`
	RSSBytes    uint64  `json:"rss_bytes,omitempty"`
	HWMBytes    uint64  `json:"hwm_bytes,omitempty"`
	Workload    string  `json:"workload,omitempty"`
	Mark        int     `json:"mark,omitempty"`
	Symbol      string  `json:"symbol,omitempty"`
	Category    string  `json:"category,omitempty"`
	Start       uint64  `json:"start,omitempty"`
	End         uint64  `json:"end,omitempty"`
	Hook        string  `json:"hook,omitempty"`
	Text        string  `json:"text,omitempty"`
	Normalise   string  `json:"normalise,omitempty"`
}

// Line is the record as one output line: Prefix and JSON.
func (r Record) Line() string {
	b, err := json.Marshal(r)
	if err != nil {
		panic(err) // only plain fields: cannot happen
	}
	return Prefix + string(b)
}

// Emit prints the record on stdout, where the lab runner streams it back.
func Emit(r Record) { fmt.Println(r.Line()) }
