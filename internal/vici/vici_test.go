package vici

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"testing"
	"time"
)

// VICI packet types and message elements (strongSwan's
// src/libcharon/plugins/vici/README.md).
const (
	pktCmdRequest      = 0
	pktCmdResponse     = 1
	pktEventRegister   = 3
	pktEventUnregister = 4
	pktEventConfirm    = 5
	pktEvent           = 7

	elemSectionStart = 1
	elemSectionEnd   = 2
	elemKeyValue     = 3
	elemListStart    = 4
	elemListItem     = 5
	elemListEnd      = 6
)

// fakeCharon answers the commands Read asks on a unix socket the way charon
// does: a listing's events, then its response, written back to back (as
// charon queues them), so the client has all of them to read at once.
type fakeCharon struct {
	conns, sas int
}

func (f fakeCharon) serve(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "charon.vici")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go f.session(c)
		}
	}()
	return path
}

func (f fakeCharon) session(c net.Conn) {
	defer c.Close()
	registered := map[string]bool{}
	for {
		var l uint32
		if err := binary.Read(c, binary.BigEndian, &l); err != nil {
			return
		}
		p := make([]byte, l)
		if _, err := io.ReadFull(c, p); err != nil || len(p) < 2 {
			return
		}
		typ, name := p[0], string(p[2:2+int(p[1])])
		var out bytes.Buffer
		switch typ {
		case pktEventRegister, pktEventUnregister:
			registered[name] = typ == pktEventRegister
			packet(&out, pktEventConfirm, "", nil)
		case pktCmdRequest:
			f.command(&out, name, registered)
		default:
			return
		}
		if _, err := c.Write(out.Bytes()); err != nil {
			return
		}
	}
}

func (f fakeCharon) command(out *bytes.Buffer, name string, registered map[string]bool) {
	var body bytes.Buffer
	switch name {
	case "version":
		keyValue(&body, "daemon", "charon")
		keyValue(&body, "version", "5.9.8")
	case "get-conns":
		body.WriteByte(elemListStart)
		str8(&body, "conns")
		for i := range f.conns {
			body.WriteByte(elemListItem)
			str16(&body, fmt.Sprintf("conn%d", i))
		}
		body.WriteByte(elemListEnd)
	case "stats":
		section(&body, "ikesas", func(b *bytes.Buffer) { keyValue(b, "total", fmt.Sprint(f.sas)) })
	case "list-conns":
		for i := range f.conns {
			if registered["list-conn"] {
				var ev bytes.Buffer
				section(&ev, fmt.Sprintf("conn%d", i), func(b *bytes.Buffer) {
					keyValue(b, "version", "IKEv2")
					b.WriteByte(elemListStart)
					str8(b, "remote_addrs")
					b.WriteByte(elemListItem)
					str16(b, fmt.Sprintf("10.0.0.%d", i+1))
					b.WriteByte(elemListEnd)
				})
				packet(out, pktEvent, "list-conn", ev.Bytes())
			}
		}
	case "list-sas":
		for i := range f.sas {
			if registered["list-sa"] {
				var ev bytes.Buffer
				section(&ev, fmt.Sprintf("conn%d", i), func(b *bytes.Buffer) {
					keyValue(b, "uniqueid", fmt.Sprint(i+1))
					keyValue(b, "state", "ESTABLISHED")
				})
				packet(out, pktEvent, "list-sa", ev.Bytes())
			}
		}
	}
	packet(out, pktCmdResponse, "", body.Bytes())
}

func packet(out *bytes.Buffer, typ byte, name string, body []byte) {
	var p bytes.Buffer
	p.WriteByte(typ)
	if typ == pktEvent {
		str8(&p, name)
	}
	p.Write(body)
	_ = binary.Write(out, binary.BigEndian, uint32(p.Len()))
	out.Write(p.Bytes())
}

func section(b *bytes.Buffer, name string, fill func(*bytes.Buffer)) {
	b.WriteByte(elemSectionStart)
	str8(b, name)
	fill(b)
	b.WriteByte(elemSectionEnd)
}

func keyValue(b *bytes.Buffer, k, v string) {
	b.WriteByte(elemKeyValue)
	str8(b, k)
	str16(b, v)
}

func str8(b *bytes.Buffer, s string) {
	b.WriteByte(byte(len(s)))
	b.WriteString(s)
}

func str16(b *bytes.Buffer, s string) {
	_ = binary.Write(b, binary.BigEndian, uint16(len(s)))
	b.WriteString(s)
}

// TestReadListsEverything: every Read returns every connection and IKE SA
// charon listed, without error, though each listing's events and response
// arrive together. govici's streamed call picks between its event and
// response queues at random: read that way, a listing ends early (lost
// connections) and its leftover events answer the next command ("vici:
// unexpected response type: 7").
func TestReadListsEverything(t *testing.T) {
	f := fakeCharon{conns: 5, sas: 4}
	c := &Client{Socket: f.serve(t), Timeout: 5 * time.Second}
	for i := range 200 {
		snap, err := c.Read(context.Background())
		if err != nil {
			t.Fatalf("read %d: %v", i, err)
		}
		if snap.Daemon != "charon" || len(snap.Conns) != f.conns || len(snap.IKESAs) != f.sas {
			t.Fatalf("read %d: daemon %q, %d connections, %d IKE SAs; want charon, %d, %d",
				i, snap.Daemon, len(snap.Conns), len(snap.IKESAs), f.conns, f.sas)
		}
	}
}
