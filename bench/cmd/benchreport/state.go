package main

import (
	"bytes"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
)

// hostTable is the verdict collector's scrape cost on the build host, and
// the 10k-series interpolation; data is the plot's input.
func (r *run) hostTable() (t table, lines []string, data string) {
	t = newTable(1, "benchmark", "keys", "series", "wall ms/op", "CPU ms/op", "CPU ns/series", "allocs/op", "allocs/series", "B/op")
	ids := make([]string, 0, len(r.host))
	for id := range r.host {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool {
		a, c := r.host[ids[i]], r.host[ids[j]]
		if a.name != c.name {
			return a.name > c.name
		}
		return a.keys < c.keys
	})
	var d strings.Builder
	prev := ""
	for _, id := range ids {
		h := r.host[id]
		ns, cpu, allocs := median(h.nsPerOp), median(h.cpuNs), median(h.allocs)
		t.add(h.name, fmt.Sprint(h.keys), num(h.series, 0), num(ns/1e6, 2), num(cpu/1e6, 2), num(cpu/h.series, 0),
			num(allocs, 0), num(allocs/h.series, 1), num(median(h.bPerOp), 0))
		if h.name != prev {
			if prev != "" {
				d.WriteString("\n\n")
			}
			prev = h.name
		}
		fmt.Fprintf(&d, "%.0f %.4f %.4f\n", h.series, cpu/1e6, ns/1e6)
	}
	for _, name := range []string{"VerdictUpdate", "VerdictScrape"} {
		if ms, ok := r.at10k(name); ok {
			lines = append(lines, fmt.Sprintf("%s at 10,000 series (interpolated): %.1f ms CPU (target < 20 ms: %s).",
				name, ms, judge("", ms < 20, true).State))
		}
	}
	return t, lines, d.String()
}

// at10k interpolates CPU ms/op at 10,000 series between the two nearest
// sizes.
func (r *run) at10k(name string) (float64, bool) {
	type pt struct{ series, ms float64 }
	var pts []pt
	for _, h := range r.host {
		if h.name == name {
			pts = append(pts, pt{h.series, median(h.cpuNs) / 1e6})
		}
	}
	sort.Slice(pts, func(i, j int) bool { return pts[i].series < pts[j].series })
	for i := 1; i < len(pts); i++ {
		if pts[i-1].series <= 10000 && pts[i].series >= 10000 {
			f := (10000 - pts[i-1].series) / (pts[i].series - pts[i-1].series)
			return pts[i-1].ms + f*(pts[i].ms-pts[i-1].ms), true
		}
	}
	return 0, false
}

// drawPlot draws scrape time against series with gnuplot; the returned
// path is relative to the report.
func drawPlot(path, report, data string) (string, error) {
	if _, err := exec.LookPath("gnuplot"); err != nil {
		return "", fmt.Errorf("gnuplot not installed")
	}
	tmp, err := os.CreateTemp("", "scrape-*.dat")
	if err != nil {
		return "", err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.WriteString(data); err != nil {
		tmp.Close()
		return "", err
	}
	if err := tmp.Close(); err != nil {
		return "", err
	}
	script := fmt.Sprintf(`set terminal pngcairo size 800,520 font ",11"
set output %q
set logscale xy
set grid
set key top left
set xlabel "series in the scrape"
set ylabel "CPU milliseconds per scrape"
set title "Verdict collector: scrape CPU time against series (host, median)"
set arrow from 10000, graph 0 to 10000, graph 1 nohead dt 2
set label "target: 10k series < 20 ms" at 10500, 25
plot %q index 0 using 1:2 with linespoints lw 2 title "Update (collector alone), CPU", \
     %q index 1 using 1:2 with linespoints lw 2 title "Scrape (gather + encode), CPU", \
     %q index 1 using 1:3 with points pt 6 title "Scrape, wall (loaded host)", \
     20 with lines dt 3 title "20 ms"
`, path, tmp.Name(), tmp.Name(), tmp.Name())
	cmd := exec.Command("gnuplot")
	cmd.Stdin = strings.NewReader(script)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("gnuplot: %v: %s", err, strings.TrimSpace(stderr.String()))
	}
	rel, err := filepath.Rel(filepath.Dir(report), path)
	if err != nil {
		rel = path
	}
	return filepath.ToSlash(rel), nil
}

// kernelState is the sa and policy collectors with 10k SAs and policies.
func (r *run) kernelState(ks []string) table {
	t := newTable(2, "kernel", "collector", "series", "collector ms", "scrape ms", "mallocs/scrape", "MB allocated/scrape", "RSS after")
	for _, k := range ks {
		recs := r.filter("kstate", k)
		var names []string
		for _, rec := range recs {
			if !contains(names, rec.Collector) {
				names = append(names, rec.Collector)
			}
		}
		for _, c := range names {
			var sec, wall, mallocs, alloc []float64
			series := 0
			for _, rec := range recs {
				if rec.Collector == c {
					sec = append(sec, rec.Seconds)
					wall = append(wall, rec.WallSeconds)
					mallocs = append(mallocs, float64(rec.Mallocs))
					alloc = append(alloc, float64(rec.AllocBytes))
					series = rec.Series
				}
			}
			rss := "–"
			for _, rec := range r.filter("rss", k) {
				if rec.Variant == c {
					rss = fmt.Sprintf("%.1f MiB", float64(rec.RSSBytes)/(1<<20))
				}
			}
			t.add(k, c, fmt.Sprint(series), num(1000*median(sec), 0), num(1000*median(wall), 0), num(median(mallocs), 0),
				num(median(alloc)/1e6, 1), rss)
		}
	}
	return t
}

// scale is the books' 50k-SA bench (bench/lab_kstate_scale_test.go): the
// median whole scrape of the exporter with only the sa collector, the
// median bare XFRM_MSG_GETSA dump of the same SAs, and the largest RSS of
// the exporter with every default collector (NaN without records).
func (r *run) scale(kernel string) (scrape, dump, rss float64) {
	var s, d []float64
	rss = math.NaN()
	for _, rec := range r.filter("kstate_scale", kernel) {
		switch {
		case rec.Variant == "scrape" && rec.Collector == "sa":
			s = append(s, rec.Seconds)
		case rec.Variant == "scrape" && rec.Collector == "default":
			if math.IsNaN(rss) || float64(rec.RSSBytes) > rss {
				rss = float64(rec.RSSBytes)
			}
		case rec.Variant == "getsa_dump":
			d = append(d, rec.Seconds)
		}
	}
	return median(s), median(d), rss
}

func (r *run) scaleTable(ks []string) table {
	t := newTable(1, "kernel", "SAs", "bare GETSA dump ms", "sa-only scrape ms", "scrape / dump", "RSS, all collectors",
		"CPU of an SA event burst")
	for _, k := range ks {
		scrape, dump, rss := r.scale(k)
		if math.IsNaN(scrape) && math.IsNaN(dump) {
			continue
		}
		objects, burst := 0, "–"
		for _, rec := range r.filter("kstate_scale", k) {
			if rec.Variant == "event_burst_cpu" {
				burst = fmt.Sprintf("%s ms for %s events", num(1000*rec.Seconds, 0), thousands(fmt.Sprint(rec.Objects)))
			} else {
				objects = max(objects, rec.Objects)
			}
		}
		t.add(k, thousands(fmt.Sprint(objects)), num(1000*dump, 0), num(1000*scrape, 0), num(scrape/dump, 2),
			num(rss/(1<<20), 1)+" MiB", burst)
	}
	return t
}

func (r *run) rssTable(ks []string) table {
	t := newTable(1, "kernel", "series", "VmRSS", "VmHWM (peak)", "target")
	for _, k := range ks {
		for _, rec := range r.filter("rss", k) {
			if rec.Variant == "default_collectors" {
				rss := float64(rec.RSSBytes) / (1 << 20)
				t.add(k, fmt.Sprint(rec.Series), fmt.Sprintf("%.1f MiB", rss), fmt.Sprintf("%.1f MiB", float64(rec.HWMBytes)/(1<<20)),
					judge("", rss < 30, true).State)
			}
		}
	}
	return t
}
