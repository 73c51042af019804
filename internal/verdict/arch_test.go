package verdict

import (
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"
)

// The committed objects of both architectures, read from the files (only
// the build's own architecture embeds its object), so that either build
// host checks both.
var archObjects = map[string]string{
	"amd64": "xfrmverdict_x86_bpfel.o",
	"arm64": "xfrmverdict_arm64_bpfel.o",
}

// Byte offsets in struct pt_regs (x86, arch/x86/include/asm/ptrace.h) and
// struct user_pt_regs (arm64: regs[31], 8 bytes each) of the registers the
// kprobe argument macros read: the arguments and the return value.
var ctxArgOffsets = map[string][]int16{
	"amd64": {112, 104, 96, 88, 72, 64, 80}, // di si dx cx r8 r9, ax
	"arm64": {0, 8, 16, 24, 32, 40, 48, 56}, // x0..x7 (x0 is also the return value)
}

func loadArchSpec(t *testing.T, arch string) *ebpf.CollectionSpec {
	t.Helper()
	spec, err := ebpf.LoadCollectionSpec(archObjects[arch])
	if err != nil {
		t.Fatalf("%s object: %v", arch, err)
	}
	return spec
}

// Both objects come from one source: the same programs on the same hooks,
// the same maps with the same shapes. A generate run for one architecture
// only, or a source change that one architecture's header cannot compile
// the same way, shows here.
func TestObjectsAgreeAcrossArchitectures(t *testing.T) {
	amd, arm := loadArchSpec(t, "amd64"), loadArchSpec(t, "arm64")
	if a, b := slices.Sorted(maps.Keys(amd.Programs)), slices.Sorted(maps.Keys(arm.Programs)); !slices.Equal(a, b) {
		t.Fatalf("programs differ:\namd64 %v\narm64 %v", a, b)
	}
	for name, pa := range amd.Programs {
		pb := arm.Programs[name]
		if pa.Type != pb.Type || pa.AttachType != pb.AttachType || pa.AttachTo != pb.AttachTo || pa.SectionName != pb.SectionName {
			t.Errorf("program %s: amd64 %v %v %s %s, arm64 %v %v %s %s", name,
				pa.Type, pa.AttachType, pa.AttachTo, pa.SectionName, pb.Type, pb.AttachType, pb.AttachTo, pb.SectionName)
		}
	}
	if a, b := slices.Sorted(maps.Keys(amd.Maps)), slices.Sorted(maps.Keys(arm.Maps)); !slices.Equal(a, b) {
		t.Fatalf("maps differ:\namd64 %v\narm64 %v", a, b)
	}
	for name, ma := range amd.Maps {
		mb := arm.Maps[name]
		if ma.Type != mb.Type || ma.KeySize != mb.KeySize || ma.ValueSize != mb.ValueSize || ma.MaxEntries != mb.MaxEntries || ma.Flags != mb.Flags {
			t.Errorf("map %s: amd64 %v %d/%d x%d, arm64 %v %d/%d x%d", name,
				ma.Type, ma.KeySize, ma.ValueSize, ma.MaxEntries, mb.Type, mb.KeySize, mb.ValueSize, mb.MaxEntries)
		}
	}
	// The -type structs user space reads the maps with (one Go type
	// for both: bpf2go writes the same declaration per architecture).
	for _, name := range []string{"verdict_key", "verdict_value", "known_peer_key"} {
		var sa, sb *btf.Struct
		if err := amd.Types.TypeByName(name, &sa); err != nil {
			t.Fatalf("amd64: %v", err)
		}
		if err := arm.Types.TypeByName(name, &sb); err != nil {
			t.Fatalf("arm64: %v", err)
		}
		if sa.Size != sb.Size || len(sa.Members) != len(sb.Members) {
			t.Errorf("struct %s: %d bytes, %d members on amd64; %d bytes, %d members on arm64",
				name, sa.Size, len(sa.Members), sb.Size, len(sb.Members))
		}
	}
}

// Each kprobe program reads its arguments from the registers of its own
// architecture: an object compiled with the other one's pt_regs layout
// loads fine and counts nonsense, so the offsets are checked here.
func TestKprobesReadTheirArchitecturesRegisters(t *testing.T) {
	for arch := range archObjects {
		spec := loadArchSpec(t, arch)
		kprobes := 0
		for name, p := range spec.Programs {
			if !strings.HasPrefix(p.SectionName, "kprobe/") && !strings.HasPrefix(p.SectionName, "kretprobe/") {
				continue
			}
			kprobes++
			offsets := ctxLoads(p.Instructions)
			if len(offsets) == 0 {
				t.Errorf("%s %s: no register read from the context", arch, name)
			}
			for _, off := range offsets {
				if !slices.Contains(ctxArgOffsets[arch], off) {
					t.Errorf("%s %s: reads pt_regs offset %d, not an argument register of %s %v", arch, name, off, arch, ctxArgOffsets[arch])
				}
			}
		}
		if kprobes < 8 {
			t.Errorf("%s: only %d kprobe programs", arch, kprobes)
		}
	}
}

// ctxLoads is the offsets of the 8-byte loads from the context (r1) before
// the program first overwrites r1: the kprobe macros' register reads.
func ctxLoads(insns asm.Instructions) []int16 {
	var out []int16
	for _, ins := range insns {
		if ins.OpCode.Class() == asm.LdXClass && ins.Src == asm.R1 && ins.OpCode.Size() == asm.DWord {
			out = append(out, ins.Offset)
		}
		if ins.Dst == asm.R1 && !ins.OpCode.Class().IsStore() {
			break
		}
	}
	return out
}
