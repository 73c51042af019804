package scenario

import (
	"fmt"
	"time"

	"github.com/vishvananda/netlink"
)

// SetTimeLimits sets the soft (rekey due) and hard (deleted) time limits of
// n's SA sa, in seconds since the SA was added, as the kernel counts them.
func SetTimeLimits(n *Netns, sa SA, soft, hard uint64) error {
	st, err := findState(n, sa)
	if err != nil {
		return err
	}
	st.Limits.TimeSoft, st.Limits.TimeHard = soft, hard
	if err := n.NL.XfrmStateUpdate(&st); err != nil {
		return fmt.Errorf("%s: time limits of SA 0x%x: %w", n.Name, sa.SPI, err)
	}
	return nil
}

// ExpireIn moves n's SA sa's time limits so that its soft limit comes soft
// and its hard limit hard from now: an SA whose rekey did not happen.
func ExpireIn(n *Netns, sa SA, soft, hard time.Duration) error {
	st, err := findState(n, sa)
	if err != nil {
		return err
	}
	// AddTime is the kernel's wall clock (seconds) when the SA was added.
	age := uint64(max(0, time.Now().Unix()-int64(st.Statistics.AddTime)))
	return SetTimeLimits(n, sa, age+uint64(soft.Seconds()), age+uint64(hard.Seconds()))
}

func findState(n *Netns, sa SA) (netlink.XfrmState, error) {
	st, ok, err := n.lookupState(sa)
	if err == nil && !ok {
		err = fmt.Errorf("%s: no SA spi 0x%x dst %s", n.Name, sa.SPI, sa.Dst)
	}
	return st, err
}
