package scenario

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// CryptoAlg is one entry of /proc/crypto.
type CryptoAlg struct {
	Name, Driver, Module, Type string
	Priority                   int
	Async                      bool
}

// CryptoAlgs parses /proc/crypto.
func CryptoAlgs(t TB) []CryptoAlg {
	t.Helper()
	b, err := os.ReadFile("/proc/crypto")
	if err != nil {
		t.Fatalf("/proc/crypto: %v", err)
	}
	var algs []CryptoAlg
	var cur *CryptoAlg
	s := bufio.NewScanner(bytes.NewReader(b))
	for s.Scan() {
		k, v, ok := strings.Cut(s.Text(), ":")
		if !ok {
			continue
		}
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		if k == "name" {
			algs = append(algs, CryptoAlg{Name: v})
			cur = &algs[len(algs)-1]
			continue
		}
		if cur == nil {
			continue
		}
		switch k {
		case "driver":
			cur.Driver = v
		case "module":
			cur.Module = v
		case "type":
			cur.Type = v
		case "priority":
			cur.Priority, _ = strconv.Atoi(v)
		case "async":
			cur.Async = v == "yes"
		}
	}
	return algs
}

// preferred returns the highest-priority implementation of name, the one
// the kernel hands to a new SA.
func preferred(t TB, name string) CryptoAlg {
	t.Helper()
	var best CryptoAlg
	for _, a := range CryptoAlgs(t) {
		if a.Name == name && a.Priority > best.Priority {
			best = a
		}
	}
	if best.Driver == "" {
		t.Fatalf("no %s in /proc/crypto", name)
	}
	return best
}

// AsyncCrypto makes every later SA using the AEAD algorithm name (e.g.
// "rfc4106(gcm(aes))") complete asynchronously: it instantiates
// pcrypt(<current best driver>) through the crypto_user netlink interface.
// The instance gets a higher priority, so new SAs pick it (ip xfrm only takes
// plain algorithm names). It returns the new driver name. The instance is
// removed at cleanup; call AsyncCrypto before creating the SAs, so their
// cleanup (which runs first) releases it.
func AsyncCrypto(t TB, name string) string {
	t.Helper()
	base := preferred(t, name)
	driver := "pcrypt(" + base.Driver + ")"
	if err := cryptoUser(unix.CRYPTO_MSG_NEWALG, name, driver); err != nil {
		t.Fatalf("crypto_user: instantiate %s: %v", driver, err)
	}
	t.Cleanup(func() {
		// SAs free their transforms from a work queue: retry while busy.
		deadline := time.Now().Add(5 * time.Second)
		for {
			err := cryptoUser(unix.CRYPTO_MSG_DELALG, name, driver)
			if err == nil {
				return
			}
			if !errors.Is(err, unix.EBUSY) || time.Now().After(deadline) {
				t.Errorf("crypto_user: remove %s: %v", driver, err)
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
	})
	if got := preferred(t, name); got.Driver != driver {
		t.Fatalf("after instantiating %s the preferred %s is %s", driver, name, got.Driver)
	}
	return driver
}

// From include/linux/crypto.h (not in x/sys).
const (
	cryptoAlgTypeAEAD = 0x3
	cryptoAlgTypeMask = 0xf
)

// cryptoUser sends one crypto_user request (struct crypto_user_alg) and
// waits for the kernel's acknowledgement.
func cryptoUser(msgType uint16, name, driver string) error {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_CRYPTO)
	if err != nil {
		return fmt.Errorf("netlink crypto socket: %w", err)
	}
	defer unix.Close(fd)
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return err
	}
	const algLen = 3*64 + 4*4 // cru_name, cru_driver_name, cru_module_name, type, mask, refcnt, flags
	msg := make([]byte, unix.NLMSG_HDRLEN+algLen)
	binary.NativeEndian.PutUint32(msg[0:4], uint32(len(msg)))
	binary.NativeEndian.PutUint16(msg[4:6], msgType)
	binary.NativeEndian.PutUint16(msg[6:8], unix.NLM_F_REQUEST|unix.NLM_F_ACK)
	binary.NativeEndian.PutUint32(msg[8:12], 1)
	p := msg[unix.NLMSG_HDRLEN:]
	copy(p[0:63], name)
	copy(p[64:127], driver)
	binary.NativeEndian.PutUint32(p[192:196], cryptoAlgTypeAEAD)
	binary.NativeEndian.PutUint32(p[196:200], cryptoAlgTypeMask)
	if err := unix.Sendto(fd, msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return err
	}
	buf := make([]byte, 4096)
	n, _, err := unix.Recvfrom(fd, buf, 0)
	if err != nil {
		return err
	}
	if n < unix.NLMSG_HDRLEN+4 || binary.NativeEndian.Uint16(buf[4:6]) != unix.NLMSG_ERROR {
		return fmt.Errorf("unexpected crypto_user reply (%d bytes)", n)
	}
	if code := int32(binary.NativeEndian.Uint32(buf[unix.NLMSG_HDRLEN:])); code != 0 {
		return unix.Errno(-code)
	}
	return nil
}
