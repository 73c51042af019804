package peers

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strings"
	"syscall"
	"time"
	"unicode/utf8"

	"go.yaml.in/yaml/v2"
)

// The peer-names file maps peer addresses to names: a YAML mapping
// ("10.0.0.2: node-a") or plain "address name" lines (# starts a comment).
// Its addresses are always known peers; its names become the peer_name
// label.

// Bounds of the peer-names file: 1 MiB holds some 40,000 peers, more than
// any fleet names in one file, and keeps a parse within a few MiB of memory.
// A longer name would be an unreadable label.
const (
	MaxNamesFileSize = 1 << 20
	MaxNameLength    = 128
)

// ErrNotRegular marks a peer-names path that is not a regular file (a FIFO,
// a device such as /dev/zero, a directory): it is never read.
var ErrNotRegular = errors.New("not a regular file")

// namesVersion tells whether the file changed since it was read.
type namesVersion struct {
	modTime time.Time
	size    int64
	inode   uint64
}

func versionOf(fi os.FileInfo) namesVersion {
	v := namesVersion{modTime: fi.ModTime(), size: fi.Size()}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		v.inode = st.Ino
	}
	return v
}

// statNames returns the file's version without opening it.
func statNames(path string) (namesVersion, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return namesVersion{}, err
	}
	return versionOf(fi), nil
}

// readNames reads and parses the file, refusing anything that is not a
// regular file of at most MaxNamesFileSize bytes. The open does not block
// on a FIFO (O_NONBLOCK), and the read stops one byte past the bound, so a
// file that grows while being read is refused as well.
func readNames(path string) (map[netip.Addr]string, namesVersion, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, namesVersion{}, err
	}
	defer func() { _ = f.Close() }()
	fi, err := f.Stat()
	if err != nil {
		return nil, namesVersion{}, err
	}
	v := versionOf(fi)
	if !fi.Mode().IsRegular() {
		return nil, v, fmt.Errorf("%s: %w (%s)", path, ErrNotRegular, fi.Mode().Type())
	}
	if fi.Size() > MaxNamesFileSize {
		return nil, v, fmt.Errorf("%s: %d bytes, more than the %d a peer-names file may have", path, fi.Size(), MaxNamesFileSize)
	}
	b, err := io.ReadAll(io.LimitReader(f, MaxNamesFileSize+1))
	if err != nil {
		return nil, v, fmt.Errorf("%s: %w", path, err)
	}
	if len(b) > MaxNamesFileSize {
		return nil, v, fmt.Errorf("%s: more than the %d bytes a peer-names file may have", path, MaxNamesFileSize)
	}
	names, err := parseNames(b)
	if err != nil {
		return nil, v, fmt.Errorf("%s: %w", path, err)
	}
	return names, v, nil
}

// CheckNamesFile reads and parses the peer-names file at path as the
// tracker will, without keeping it: what the flag check runs, so that a
// file that is missing, not a regular file (/dev/zero, a FIFO), too large
// or malformed stops the exporter before anything is loaded or attached.
func CheckNamesFile(path string) error {
	_, _, err := readNames(path)
	return err
}

// parseNames reads either format. A YAML mapping is tried first; text that
// is not one ("10.0.0.2 node-a" lines read as a single YAML string) is read
// as lines.
func parseNames(b []byte) (map[netip.Addr]string, error) {
	var m map[string]string
	if err := yaml.UnmarshalStrict(b, &m); err == nil && m != nil {
		return canonicalNames(m)
	}
	m = map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		f := strings.Fields(line)
		switch len(f) {
		case 0:
			continue
		case 2:
			m[f[0]] = f[1]
		default:
			return nil, fmt.Errorf("line %d: want \"address name\" (or a YAML mapping), got %q", n, sc.Text())
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return canonicalNames(m)
}

// canonicalNames parses every address, so that "fd00:0::2" matches the
// kernel's fd00::2, and checks that every name can be a label value.
func canonicalNames(m map[string]string) (map[netip.Addr]string, error) {
	out := make(map[netip.Addr]string, len(m))
	for addr, name := range m {
		a, err := netip.ParseAddr(strings.TrimSpace(addr))
		if err != nil {
			return nil, fmt.Errorf("peer address %q: %w", addr, err)
		}
		if !utf8.ValidString(name) {
			return nil, fmt.Errorf("peer %s: name %q is not valid UTF-8", a, name)
		}
		if len(name) > MaxNameLength {
			return nil, fmt.Errorf("peer %s: name of %d bytes, longer than %d", a, len(name), MaxNameLength)
		}
		out[a.Unmap()] = name
	}
	return out, nil
}
