// Command benchreport turns what `make bench` measured into BENCHMARKS.md:
// the lab benchmarks' BENCH lines (one file per kernel run), the insnprof
// profiles of those runs (bench/qemu/insnprof.c), the host's Go benchmark
// output, and a PNG plot of scrape time against series (drawn by gnuplot).
// Every figure and verdict comes from one run; report.md.tmpl is the text.
package main

import (
	"bytes"
	_ "embed"
	"flag"
	"fmt"
	"os"
	"strings"
	"text/template"
)

//go:embed report.md.tmpl
var reportText string

var reportTemplate = template.Must(template.New("report").Parse(reportText))

func main() {
	var (
		hostFile  = flag.String("host", "", "go test -bench output of the host benchmarks")
		labFiles  = flag.String("lab", "", "comma-separated outputs of `ipsec-lab test -run ^TestLabBench` (one per kernel)")
		profiles  = flag.String("profile", "", "comma-separated KERNEL=FILE insnprof outputs of those runs")
		noPlugin  = flag.String("no-profile", "", "why there are no insnprof profiles (printed in the report)")
		notesFile = flag.String("notes", "bench/NOTES.md", "hand-written findings appended to the report")
		out       = flag.String("o", "BENCHMARKS.md", "report to write")
		plot      = flag.String("plot", "bench/scrape.png", "PNG plot of scrape time against series (empty: none)")
		meta      = flag.String("meta", "", "file of `key: value` lines about the run (date, host, load, commands)")
	)
	flag.Parse()
	r := newRun()
	r.noPlugin = *noPlugin
	check := func(err error) {
		if err != nil {
			fmt.Fprintf(os.Stderr, "benchreport: %v\n", err)
			os.Exit(1)
		}
	}
	if *meta != "" {
		check(r.readMeta(*meta))
	}
	for _, f := range strings.Split(*labFiles, ",") {
		if f != "" {
			check(r.readLab(f))
		}
	}
	for _, kf := range strings.Split(*profiles, ",") {
		if k, f, ok := strings.Cut(kf, "="); ok {
			check(r.readProfile(k, f))
		}
	}
	if len(r.profiles) == 0 && r.noPlugin == "" {
		r.noPlugin = "no profile given"
	}
	if *hostFile != "" {
		check(r.readHost(*hostFile))
	}
	p := r.page()
	var data string
	p.Host, p.HostLines, data = r.hostTable()
	if *plot != "" && len(r.host) > 0 {
		if rel, err := drawPlot(*plot, *out, data); err != nil {
			p.HostLines = append(p.HostLines, fmt.Sprintf("(No plot: %v.)", err))
		} else {
			p.Plot = rel
		}
	}
	if notes, err := os.ReadFile(*notesFile); err == nil {
		p.Notes = string(notes)
	}
	var b bytes.Buffer
	check(reportTemplate.Execute(&b, p))
	check(os.WriteFile(*out, b.Bytes(), 0o644))
	fmt.Fprintf(os.Stderr, "benchreport: wrote %s\n", *out)
}
