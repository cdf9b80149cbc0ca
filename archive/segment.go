package archive

import (
	"bufio"
	_ "embed"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/klauspost/compress/zstd"
)

// Segment file layout (docs/format.md, "Segments").
const (
	SegmentMagic    = "AUDITARCH-SEG-1\n"
	SegmentPattern  = "seg-*.aseg" // the glob of segment file names
	BlockHeaderSize = 8            // u32 compressed length, u32 CRC-32C of the compressed bytes
	EntryHeadSize   = 5            // u8 entry type, u32 payload length
	LockFile        = "LOCK"
	FormatV1        = 1
)

// Entry types inside a decompressed block.
const (
	EntryHeader     byte = 1 // JSON SegmentHeader; the only entry of a segment's first block
	EntryLeaf       byte = 2 // leaf bytes
	EntryCheckpoint byte = 3 // a signed checkpoint note
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// SegmentHeader opens every segment. With it a segment can be checked on its own: Frontier rebuilds the
// tree before the segment's first leaf, and PrevCheckpoint is the last checkpoint written before it
// (which the previous segment must end with, or hold last).
type SegmentHeader struct {
	Format         int      `json:"format"`
	Origin         string   `json:"origin"`
	Segment        uint64   `json:"segment"`     // sequence number, from 0
	FirstIndex     uint64   `json:"first_index"` // index of the segment's first leaf
	Start          int64    `json:"start"`       // unix ns when the segment was opened
	Frontier       []string `json:"frontier"`    // tree frontier at FirstIndex (Frontier.Encode)
	PrevCheckpoint string   `json:"prev_checkpoint,omitempty"`
	// EpochKey is the epoch key signing when the segment was opened at a rotation; empty when the
	// segment starts a run (its first leaf is START).
	EpochKey string `json:"epoch_key,omitempty"`
	Epoch    uint64 `json:"epoch"`
	// PrevKernelTimes is the range [min, max] of the kernel timestamps (unix ns) of the event and LOST
	// leaves in the segment before, when it had any: search skips segments by it without reading them.
	PrevKernelTimes []int64 `json:"prev_kernel_times,omitempty"`
}

func SegmentName(first uint64, start time.Time) string {
	return fmt.Sprintf("seg-%020d-%s.aseg", first, start.UTC().Format("20060102T150405Z"))
}

// ErrCorrupt is wrapped by every *CorruptError.
var ErrCorrupt = errors.New("corrupt archive")

// CorruptError locates bytes of a segment that do not decode: a torn tail after a crash (Torn), or damage.
type CorruptError struct {
	Path   string
	Offset int64
	Reason string
	Torn   bool // the file ends inside a block: the writer stopped mid-write (or the tail was cut)
}

func (e *CorruptError) Error() string {
	return fmt.Sprintf("%s: offset %d: %s", e.Path, e.Offset, e.Reason)
}

func (e *CorruptError) Unwrap() error { return ErrCorrupt }

// IsCorrupt reports whether err is about a damaged or torn segment.
func IsCorrupt(err error) bool { return errors.Is(err, ErrCorrupt) }

// SegmentPattern matches the file names of an archive's segments (docs/format.md, "Directory").

// ListSegments returns the segment files of dir sorted by name (their first leaf index).
func ListSegments(dir string) ([]string, error) {
	files, err := filepath.Glob(filepath.Join(dir, SegmentPattern))
	if err != nil {
		return nil, err
	}
	sort.Strings(files)
	return files, nil
}

// The block's CRC-32C already covers the compressed bytes: the frame's content checksum (xxhash of the
// decompressed bytes) is not checked again on the read path.
// zstdDict is a raw-content zstd dictionary of typical audit records, control-leaf JSON and checkpoint
// text (docs/format.md, "Segments"). A block holds what one flush wrote: on a quiet host that is one or
// two events, which zstd alone cannot compress much; with the dictionary it can. Its bytes are part of
// the format and never change: a new dictionary needs a new ID.
//
//go:embed zstd.dict
var zstdDict []byte

// zstdDictID names zstdDict in every block's zstd frame header.
const zstdDictID = 0x41410001

var zdec, _ = zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(MaxBlock),
	zstd.IgnoreChecksum(true), zstd.WithDecoderDictRaw(zstdDictID, zstdDict))

// segReader reads a segment block by block and yields its entries.
type SegmentReader struct {
	path     string
	f        *os.File
	br       *bufio.Reader
	off      int64 // file offset of the next block
	blockOff int64 // file offset of the current block
	size     int64
	raw      []byte
	buf      []byte // the current block, decompressed
	p        []byte // entries of the current block not yet returned
	blocks   int
}

func OpenSegment(path string) (*SegmentReader, error) { return openSegmentBuf(path, 256<<10) }

// openSegmentBuf opens a segment with a read buffer of bufSize bytes: large to read it through, small to
// read only its header (the first fill of the buffer reads that much of the file).
func openSegmentBuf(path string, bufSize int) (*SegmentReader, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	s := &SegmentReader{path: path, f: f, br: bufio.NewReaderSize(f, bufSize), size: st.Size()}
	magic := make([]byte, len(SegmentMagic))
	if _, err := io.ReadFull(s.br, magic); err != nil || string(magic) != SegmentMagic {
		f.Close()
		return nil, &CorruptError{Path: path, Reason: "not an auditarch segment (bad magic)", Torn: err != nil && st.Size() < int64(len(SegmentMagic))}
	}
	s.off = int64(len(SegmentMagic))
	return s, nil
}

func (s *SegmentReader) Close() error { return s.f.Close() }

// Size is the size of the segment file when it was opened.
func (s *SegmentReader) Size() int64 { return s.size }

// BlockOffset is the file offset of the block Next last read from.
func (s *SegmentReader) BlockOffset() int64 { return s.blockOff }

// Blocks counts the blocks read so far (1: the header block).
func (s *SegmentReader) Blocks() int { return s.blocks }

func (s *SegmentReader) corrupt(off int64, torn bool, format string, args ...any) error {
	return &CorruptError{Path: s.path, Offset: off, Reason: fmt.Sprintf(format, args...), Torn: torn}
}

// The one block decoder. Every reader of segment bytes — verify.Stream (and so verify.Dir and the store), Reader
// (show, search), the writer's recovery and WholeBlocks (the shipper) — frames blocks with BlockLength,
// opens them with OpenBlock and splits their entries with NextEntry.

// BlockLength returns the total length (header included) of the block whose 8-byte header is h, or an
// error when the header declares more than the format allows (checked before anything is read or
// allocated for it).
func BlockLength(h []byte) (int, error) {
	l := binary.LittleEndian.Uint32(h)
	if l > MaxBlock {
		return 0, fmt.Errorf("block length %d is beyond the format's limit of %d", l, MaxBlock)
	}
	return BlockHeaderSize + int(l), nil
}

// OpenBlock checks the CRC of a whole block (header and frame) and decompresses its frame into dst's
// storage; the result is at most MaxBlock bytes.
func OpenBlock(block, dst []byte) ([]byte, error) {
	if crc32.Checksum(block[BlockHeaderSize:], castagnoli) != binary.LittleEndian.Uint32(block[4:]) {
		return dst[:0], errors.New("block checksum mismatch")
	}
	out, err := zdec.DecodeAll(block[BlockHeaderSize:], dst[:0])
	if err != nil {
		return out[:0], fmt.Errorf("block does not decompress: %v", err)
	}
	return out, nil
}

// NextEntry splits the first entry off the decompressed entries p.
func NextEntry(p []byte) (typ byte, payload, rest []byte, err error) {
	if len(p) < EntryHeadSize {
		return 0, nil, nil, errors.New("truncated entry in block")
	}
	typ = p[0]
	l := binary.LittleEndian.Uint32(p[1:])
	if int64(l) > int64(len(p)-EntryHeadSize) {
		return 0, nil, nil, errors.New("entry runs past the end of its block")
	}
	switch typ {
	case EntryHeader, EntryLeaf, EntryCheckpoint:
	default:
		return 0, nil, nil, fmt.Errorf("unknown entry type %d", typ)
	}
	return typ, p[EntryHeadSize : EntryHeadSize+int(l)], p[EntryHeadSize+int(l):], nil
}

// DecodeHeader parses a header entry's payload.
func DecodeHeader(p []byte) (SegmentHeader, error) {
	var h SegmentHeader
	if len(p) > maxHeader {
		return h, fmt.Errorf("segment header of %d bytes is beyond the format's limit of %d", len(p), maxHeader)
	}
	if err := json.Unmarshal(p, &h); err != nil {
		return h, fmt.Errorf("segment header: %v", err)
	}
	if h.Format != FormatV1 {
		return h, fmt.Errorf("segment format %d is not supported", h.Format)
	}
	return h, nil
}

// nextBlock reads and decompresses the next block. io.EOF at a clean end of file.
func (s *SegmentReader) nextBlock() error {
	if cap(s.raw) < BlockHeaderSize {
		s.raw = make([]byte, BlockHeaderSize, 64<<10)
	}
	h := s.raw[:BlockHeaderSize]
	n, err := io.ReadFull(s.br, h)
	if err == io.EOF {
		return io.EOF
	}
	if err != nil {
		return s.corrupt(s.off, true, "torn block header at end of file (%d of %d bytes)", n, BlockHeaderSize)
	}
	l, err := BlockLength(h)
	if err != nil {
		return s.corrupt(s.off, false, "%v", err)
	}
	if rest := s.size - s.off; int64(l) > rest {
		return s.corrupt(s.off, true, "block of %d bytes runs past the end of the file by %d bytes (torn write)", l-BlockHeaderSize, int64(l)-rest)
	}
	if cap(s.raw) < l {
		s.raw = append(s.raw[:BlockHeaderSize], make([]byte, l-BlockHeaderSize)...)
	}
	s.raw = s.raw[:l]
	if _, err := io.ReadFull(s.br, s.raw[BlockHeaderSize:]); err != nil {
		return s.corrupt(s.off, true, "block cut short: %v", err)
	}
	if s.buf, err = OpenBlock(s.raw, s.buf); err != nil {
		return s.corrupt(s.off, false, "%v", err)
	}
	s.blockOff = s.off
	s.off += int64(l)
	s.p = s.buf
	s.blocks++
	return nil
}

// Next returns the next entry. Its payload aliases the block buffer and is valid until the next call that
// reads a block. io.EOF at a clean end; a *CorruptError for a torn or damaged block (the entries before it
// were all returned).
func (s *SegmentReader) Next() (byte, []byte, error) {
	for len(s.p) == 0 {
		if err := s.nextBlock(); err != nil {
			return 0, nil, err
		}
	}
	typ, payload, rest, err := NextEntry(s.p)
	if err != nil {
		s.p = nil
		return 0, nil, s.corrupt(s.blockOff, false, "%v", err)
	}
	s.p = rest
	return typ, payload, nil
}

// ReadHeader reads the segment's first entry, which must be its header.
func (s *SegmentReader) ReadHeader() (SegmentHeader, error) {
	typ, p, err := s.Next()
	if err != nil {
		if errors.Is(err, io.EOF) {
			return SegmentHeader{}, s.corrupt(s.off, true, "segment has no header block")
		}
		return SegmentHeader{}, err
	}
	if typ != EntryHeader {
		return SegmentHeader{}, s.corrupt(s.blockOff, false, "segment does not start with a header")
	}
	h, err := DecodeHeader(p)
	if err != nil {
		return h, s.corrupt(s.blockOff, false, "%v", err)
	}
	return h, nil
}

// ReadSegmentHeader opens path just to read its header. Search and verify read every segment's header
// first: a small buffer keeps that from reading (and allocating) 256 KiB of each file.
func ReadSegmentHeader(path string) (SegmentHeader, error) {
	s, err := openSegmentBuf(path, 8<<10)
	if err != nil {
		return SegmentHeader{}, err
	}
	defer s.Close()
	return s.ReadHeader()
}

// AppendEntry appends an entry: u8 type, u32 payload length, payload.
func AppendEntry(b []byte, typ byte, payload []byte) []byte {
	b = append(b, typ)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(payload)))
	return append(b, payload...)
}

// The zstd frame checksum is off: the block's CRC-32C covers the compressed bytes and the leaf hashes
// the content, and xxhash cost 9% of the writer's CPU.
var zenc, _ = zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedDefault), zstd.WithEncoderConcurrency(1),
	zstd.WithLowerEncoderMem(true), zstd.WithEncoderCRC(false), zstd.WithEncoderDictRaw(zstdDictID, zstdDict))

// AppendBlock appends the block holding entries: u32 length, u32 CRC-32C, zstd frame.
func AppendBlock(b, entries []byte) []byte {
	start := len(b)
	b = append(b, 0, 0, 0, 0, 0, 0, 0, 0)
	b = zenc.EncodeAll(entries, b)
	z := b[start+BlockHeaderSize:]
	binary.LittleEndian.PutUint32(b[start:], uint32(len(z)))
	binary.LittleEndian.PutUint32(b[start+4:], crc32.Checksum(z, castagnoli))
	return b
}

// WholeBlocks returns the length of the longest prefix of b — bytes of a segment file starting at
// offset off — that ends where a block ends (at offset 0 the magic and at least the header block). A
// shipper sends such prefixes, so that what it sends is checked, and held, as it arrives.
func WholeBlocks(b []byte, off int64) int {
	p := 0
	if off == 0 {
		if len(b) < len(SegmentMagic) {
			return 0
		}
		p = len(SegmentMagic)
	}
	start := p
	for len(b)-p >= BlockHeaderSize {
		l, err := BlockLength(b[p:])
		if err != nil || len(b)-p < l {
			break
		}
		p += l
	}
	if off == 0 && p == start {
		return 0
	}
	return p
}

// KernelRange is the span of kernel timestamps (unix ns) of a segment's events.
type KernelRange struct{ Min, Max int64 }

func (k *KernelRange) Add(t int64) {
	if k.Min == 0 || t < k.Min {
		k.Min = t
	}
	if t > k.Max {
		k.Max = t
	}
}

// Header returns the range for the next segment's header (nil when there were no events).
func (k KernelRange) Header() []int64 {
	if k.Max == 0 {
		return nil
	}
	return []int64{k.Min, k.Max}
}

// EventKernelTime returns the kernel timestamp (unix ns) of an EVENT or LOST leaf.
func EventKernelTime(leaf []byte) int64 {
	return int64(binary.LittleEndian.Uint64(leaf[6:]))*1e9 + int64(int32(binary.LittleEndian.Uint32(leaf[14:])))*1e6
}

// ParseSegmentName returns the first leaf index a segment's file name gives: exactly
// seg-<20 digits>-<YYYYMMDDThhmmssZ>.aseg, one spelling per segment (no signs, spaces or paths).
func ParseSegmentName(name string) (uint64, bool) {
	const form = "seg-00000000000000000000-00000000T000000Z.aseg"
	if len(name) != len(form) {
		return 0, false
	}
	var first uint64
	for i := range len(form) {
		c := name[i]
		if form[i] != '0' {
			if c != form[i] {
				return 0, false
			}
			continue
		}
		if c < '0' || c > '9' {
			return 0, false
		}
		if i >= 4 && i < 24 {
			if first > (1<<64-1-uint64(c-'0'))/10 {
				return 0, false
			}
			first = first*10 + uint64(c-'0')
		}
	}
	if _, err := time.Parse("20060102T150405Z", name[25:41]); err != nil {
		return 0, false
	}
	return first, true
}

func NameMatches(name string, first uint64) bool {
	n, ok := ParseSegmentName(name)
	return ok && n == first
}
