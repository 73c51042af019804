package collector

import (
	"bufio"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/ipsec-exporter/ipsec_exporter/lab/scenario"
)

// The kernel's own view of its SAs, from Debian's `ip -s xfrm state` in the
// lab, and of its MIB, to check the collectors' series against.

// ipState is one SA as `ip -s xfrm state` prints it.
type ipState struct {
	src, dst, spi                                string
	bytes, packets, replayWindow, replay, failed uint64
}

var (
	ipSrcDst   = regexp.MustCompile(`^src (\S+) dst (\S+)`)
	ipSPI      = regexp.MustCompile(`^\s+proto \S+ spi (0x[0-9a-f]+)`)
	ipCurrent  = regexp.MustCompile(`^\s+(\d+)\(bytes\), (\d+)\(packets\)`)
	ipStats    = regexp.MustCompile(`^\s+replay-window (\d+) replay (\d+) failed (\d+)`)
	ipInStats  = regexp.MustCompile(`^\s+stats:`)
	parseUintT = func(t *testing.T, s string) uint64 {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("ip output number %q: %v", s, err)
		}
		return v
	}
)

// ipStates runs Debian's ip in the namespace and parses its SAs.
func ipStates(t *testing.T, n *scenario.Netns) map[string]ipState {
	t.Helper()
	out := n.IP(t, "-s", "xfrm", "state")
	states := map[string]ipState{}
	var cur *ipState
	inStats := false
	flush := func() {
		if cur != nil {
			states[cur.spi+"/"+cur.dst] = *cur
		}
	}
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		line := sc.Text()
		if m := ipSrcDst.FindStringSubmatch(line); m != nil {
			flush()
			cur, inStats = &ipState{src: m[1], dst: m[2]}, false
			continue
		}
		if cur == nil {
			continue
		}
		switch {
		case ipSPI.MatchString(line):
			cur.spi = ipSPI.FindStringSubmatch(line)[1]
		case ipCurrent.MatchString(line):
			m := ipCurrent.FindStringSubmatch(line)
			cur.bytes, cur.packets = parseUintT(t, m[1]), parseUintT(t, m[2])
		case ipInStats.MatchString(line):
			inStats = true
		case inStats && ipStats.MatchString(line):
			m := ipStats.FindStringSubmatch(line)
			cur.replayWindow, cur.replay, cur.failed = parseUintT(t, m[1]), parseUintT(t, m[2]), parseUintT(t, m[3])
		}
	}
	flush()
	return states
}

// compareWithIP checks every SA ip shows in n against the sa collector's
// series: packets, bytes, replay (both reasons) and integrity failures.
// It returns how many SAs it compared.
func compareWithIP(t *testing.T, s samples, n *scenario.Netns) int {
	t.Helper()
	states := ipStates(t, n)
	larval := 0
	for _, st := range states {
		id := map[string]string{"netns": n.Name, "spi": st.spi, "dst": st.dst}
		if st.spi == "0x00000000" {
			// The kernel's acquire placeholder: only in ipsec_sa_larval.
			larval++
			if _, ok := s.find(t, "ipsec_sa_packets_total", id); ok {
				t.Errorf("%s larval SA to %s has per-SA series", n.Name, st.dst)
			}
			continue
		}
		rid := func(reason string) map[string]string {
			return map[string]string{"netns": n.Name, "spi": st.spi, "dst": st.dst, "reason": reason}
		}
		for _, c := range []struct {
			name   string
			labels map[string]string
			want   uint64
		}{
			{"ipsec_sa_packets_total", id, st.packets},
			{"ipsec_sa_bytes_total", id, st.bytes},
			{"ipsec_sa_integrity_failures_total", id, st.failed},
			{"ipsec_sa_replay_failures_total", rid("duplicate"), st.replay},
			{"ipsec_sa_replay_failures_total", rid("outside_window"), st.replayWindow},
		} {
			if got := s.get(t, c.name, c.labels); got != float64(c.want) {
				t.Errorf("%s %s spi %s dst %s: exporter %v, ip -s xfrm state %d", n.Name, c.name, st.spi, st.dst, got, c.want)
			}
		}
	}
	if got := s.get(t, "ipsec_sa_larval", map[string]string{"netns": n.Name}); got != float64(larval) {
		t.Errorf("%s ipsec_sa_larval %v, ip -s xfrm state shows %d with SPI 0", n.Name, got, larval)
	}
	return len(states)
}

// mibDelta is the change of every ipsec_xfrm_stat_errors_total counter of
// one namespace between two scrapes.
func mibDelta(t *testing.T, before, after samples, netns string) scenario.Counters {
	t.Helper()
	d := scenario.Counters{}
	for k, v := range after {
		if !strings.HasPrefix(k, "ipsec_xfrm_stat_errors_total{") || !strings.Contains(k, ",netns="+netns+"}") {
			continue
		}
		if v != before[k] {
			d[counterOf(k)] = uint64(v - before[k])
		}
	}
	return d
}

func counterOf(key string) string {
	const p = "counter="
	i := strings.Index(key, p)
	return key[i+len(p) : i+len(p)+strings.IndexAny(key[i+len(p):], ",}")]
}
