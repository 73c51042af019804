package lab

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"path"
	"strings"
)

// cpioWriter writes an uncompressed "newc" cpio archive, the format the
// kernel unpacks as an initramfs. Writing it ourselves means no root, no
// fakeroot and no cpio tool: device nodes and root ownership are just header
// fields.
type cpioWriter struct {
	w    *bufio.Writer
	n    int64 // bytes written, for padding
	ino  uint32
	seen map[string]bool
}

func newCPIOWriter(w io.Writer) *cpioWriter {
	return &cpioWriter{w: bufio.NewWriterSize(w, 1<<20), seen: map[string]bool{}}
}

const (
	cpioDir     = 0o040000
	cpioFile    = 0o100000
	cpioSymlink = 0o120000
	cpioCharDev = 0o020000
)

func (c *cpioWriter) header(name string, mode uint32, size int, rdevMajor, rdevMinor uint32) error {
	c.ino++
	nlink := uint32(1)
	if mode&0o170000 == cpioDir {
		nlink = 2
	}
	hdr := fmt.Sprintf("070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
		c.ino, mode, 0, 0, nlink, 0, size, 0, 0, rdevMajor, rdevMinor, len(name)+1, 0)
	if err := c.write([]byte(hdr + name + "\x00")); err != nil {
		return err
	}
	return c.pad()
}

func (c *cpioWriter) write(b []byte) error {
	n, err := c.w.Write(b)
	c.n += int64(n)
	return err
}

func (c *cpioWriter) pad() error {
	if r := c.n % 4; r != 0 {
		return c.write(make([]byte, 4-r))
	}
	return nil
}

// clean turns "/a/b" into "a/b", the form the kernel expects.
func clean(name string) string {
	return strings.TrimPrefix(path.Clean("/"+name), "/")
}

// parents creates the missing parent directories of name.
func (c *cpioWriter) parents(name string) error {
	dir := path.Dir(name)
	if dir == "." || dir == "/" || c.seen[dir] {
		return nil
	}
	return c.Dir(dir)
}

// Dir adds a directory (and its parents).
func (c *cpioWriter) Dir(name string) error {
	name = clean(name)
	if c.seen[name] {
		return nil
	}
	if err := c.parents(name); err != nil {
		return err
	}
	c.seen[name] = true
	return c.header(name, cpioDir|0o755, 0, 0, 0)
}

// File adds a regular file with the given content and permission bits.
func (c *cpioWriter) File(name string, perm uint32, data []byte) error {
	name = clean(name)
	if c.seen[name] {
		return fmt.Errorf("cpio: duplicate entry %s", name)
	}
	if err := c.parents(name); err != nil {
		return err
	}
	c.seen[name] = true
	if err := c.header(name, cpioFile|perm, len(data), 0, 0); err != nil {
		return err
	}
	if err := c.write(data); err != nil {
		return err
	}
	return c.pad()
}

// CopyFile adds the host file src as name, keeping its permission bits.
func (c *cpioWriter) CopyFile(name, src string) error {
	data, err := os.ReadFile(src)
	if err != nil {
		return fmt.Errorf("cpio: %w", err)
	}
	st, err := os.Stat(src)
	if err != nil {
		return fmt.Errorf("cpio: %w", err)
	}
	return c.File(name, uint32(st.Mode().Perm()), data)
}

// Symlink adds a symbolic link name -> target.
func (c *cpioWriter) Symlink(name, target string) error {
	name = clean(name)
	if err := c.parents(name); err != nil {
		return err
	}
	c.seen[name] = true
	if err := c.header(name, cpioSymlink|0o777, len(target), 0, 0); err != nil {
		return err
	}
	if err := c.write([]byte(target)); err != nil {
		return err
	}
	return c.pad()
}

// CharDev adds a character device node, e.g. /dev/console, which the kernel
// opens for init before anything could mount devtmpfs.
func (c *cpioWriter) CharDev(name string, major, minor uint32) error {
	name = clean(name)
	if err := c.parents(name); err != nil {
		return err
	}
	c.seen[name] = true
	return c.header(name, cpioCharDev|0o600, 0, major, minor)
}

// Close writes the trailer and flushes.
func (c *cpioWriter) Close() error {
	if err := c.header("TRAILER!!!", 0, 0, 0, 0); err != nil {
		return err
	}
	return c.w.Flush()
}
