package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/ipsec-exporter/ipsec_exporter/bench"
	"github.com/ipsec-exporter/ipsec_exporter/lab"
)

// run is everything one `make bench` measured.
type run struct {
	meta     []keyValue
	records  []bench.Record
	kernels  map[string]labKernel // by short name
	order    []string
	host     map[string]*hostBench
	profiles map[string]map[int]*windowCost // kernel -> closing mark -> cost
	noPlugin string                         // why there is no profile, when there is none
}

type keyValue struct{ Key, Value string }

type labKernel struct {
	Name, Release, Package string
}

func newRun() *run {
	return &run{kernels: map[string]labKernel{}, host: map[string]*hostBench{},
		profiles: map[string]map[int]*windowCost{}}
}

func (r *run) metaValue(key string) string {
	for _, kv := range r.meta {
		if kv.Key == key {
			return kv.Value
		}
	}
	return ""
}

func (r *run) readMeta(path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ": "); ok {
			r.meta = append(r.meta, keyValue{k, v})
		}
	}
	return nil
}

// kernelLine is how ipsec-lab names the package it booted.
var kernelLine = regexp.MustCompile(`ipsec-lab: kernel (\S+): (\S+) \((\S+)\)`)

// readLab reads one `ipsec-lab test` output: the kernel line and the BENCH
// records.
func (r *run) readLab(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	s.Buffer(make([]byte, 1<<20), 1<<20)
	for s.Scan() {
		line := s.Text()
		if m := kernelLine.FindStringSubmatch(line); m != nil {
			if _, ok := r.kernels[m[1]]; !ok {
				r.order = append(r.order, m[1])
			}
			r.kernels[m[1]] = labKernel{Name: m[1], Release: m[2], Package: m[3]}
		}
		i := strings.Index(line, bench.Prefix)
		if i < 0 {
			continue
		}
		var rec bench.Record
		if err := json.Unmarshal([]byte(line[i+len(bench.Prefix):]), &rec); err != nil {
			return fmt.Errorf("%s: %q: %w", path, line, err)
		}
		r.records = append(r.records, rec)
	}
	return s.Err()
}

// readProfile reads kernel's insnprof output, charging each window with
// the ranges the lab printed for it.
func (r *run) readProfile(kernel, path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	var static []bench.Record
	byMark := map[int][]bench.Record{}
	for _, rec := range r.records {
		if rec.Kind != "range" || rec.Kernel != kernel {
			continue
		}
		if rec.Mark == 0 {
			static = append(static, rec)
		} else {
			byMark[rec.Mark] = append(byMark[rec.Mark], rec)
		}
	}
	costs, err := readProfile(f, func(mark int) spans {
		return newSpans(append(append([]bench.Record(nil), static...), byMark[mark]...))
	})
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	r.profiles[kernel] = costs
	return nil
}

// kernelList is the kernels in version order.
func (r *run) kernelList() []string {
	ks := append([]string(nil), r.order...)
	sort.Slice(ks, func(i, j int) bool { return lab.VersionLess(ks[i], ks[j]) })
	return ks
}

func (r *run) filter(kind, kernel string) []bench.Record {
	var out []bench.Record
	for _, rec := range r.records {
		if rec.Kind == kind && rec.Kernel == kernel {
			out = append(out, rec)
		}
	}
	return out
}

type hostBench struct {
	name    string // e.g. VerdictScrape
	keys    int
	nsPerOp []float64
	cpuNs   []float64
	bPerOp  []float64
	allocs  []float64
	series  float64
}

var benchLine = regexp.MustCompile(`^Benchmark(\w+)/keys=(\d+)-\d+\s+\d+\s+(.*)$`)

// readHost reads `go test -bench` output of the collector benchmarks.
func (r *run) readHost(path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	for _, line := range strings.Split(string(b), "\n") {
		m := benchLine.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		keys, _ := strconv.Atoi(m[2])
		id := m[1] + "/" + m[2]
		h := r.host[id]
		if h == nil {
			h = &hostBench{name: m[1], keys: keys}
			r.host[id] = h
		}
		f := strings.Fields(m[3])
		for i := 0; i+1 < len(f); i += 2 {
			v, err := strconv.ParseFloat(f[i], 64)
			if err != nil {
				continue
			}
			switch f[i+1] {
			case "ns/op":
				h.nsPerOp = append(h.nsPerOp, v)
			case "cpu-ns/op":
				h.cpuNs = append(h.cpuNs, v)
			case "B/op":
				h.bPerOp = append(h.bPerOp, v)
			case "allocs/op":
				h.allocs = append(h.allocs, v)
			case "series":
				h.series = v
			}
		}
	}
	return nil
}
