package archive

import "time"

// Limits of the format (docs/format.md, "Limits"). Every length read from a segment is checked against
// them before anything is allocated for it, so that hostile bytes cost verify, show, search, Stream and
// the store a bounded amount of memory: at most a few times MaxBlock per reader, whatever the input.
// Intervals an archive declares are bounded too: a verifier never takes more from an archive than these.
const (
	// MaxBlock bounds a block's compressed bytes and what its frame decompresses to. The writer cuts a
	// block at FlushBytes (at most MaxFlushBytes), so an honest block is far smaller.
	MaxBlock = 16 << 20
	// MaxFlushBytes bounds Options.FlushBytes: a block's leaves, plus its control leaves and checkpoint,
	// stay well inside MaxBlock.
	MaxFlushBytes = 4 << 20
	// MaxLeaf bounds one leaf. A kernel event larger than this (an exec with megabytes of arguments) is
	// not kept: it is counted in a LOST leaf (local_drop).
	MaxLeaf = 4 << 20
	// MaxRecords bounds the records of one event leaf (an exec of 401 arguments spans a few dozen).
	MaxRecords = 4096
	// MaxBlockLeaves bounds the leaves of one block (the writer cuts a block there too): with MaxBlock it
	// bounds the hashing one block can cost.
	MaxBlockLeaves = 1 << 16
	// MaxBlockCheckpoints bounds the checkpoints of one block (a writer puts one or two in a block, three
	// with a seal): each costs a signature check.
	MaxBlockCheckpoints = 8
	// MaxBlockProblems: a block that raises more tampering problems than this is not read further (the
	// rest of its segment is damaged), so a few hostile bytes cannot cost a reader much CPU.
	MaxBlockProblems = 16
	// maxHeader bounds a segment header's JSON.
	maxHeader = 64 << 10
	// MaxNote bounds a signed checkpoint.
	MaxNote = 4 << 10

	// MaxHeartbeat bounds the heartbeat interval a writer may promise (Options.HeartbeatInterval): a
	// verifier reports any silence longer than min(declared, MaxHeartbeat) + grace.
	MaxHeartbeat = time.Minute
	// MaxEpoch bounds an epoch key's lifetime (Options.EpochDuration). A checkpoint signed by an epoch key
	// may cover control leaves written up to its epoch's length (at most MaxEpoch) plus EpochSlack after the
	// leaf that introduced it; later ones were signed by a key that should have been erased.
	MaxEpoch = 10 * time.Minute
	// EpochSlack is how late an epoch may end: the writer re-keys at the first flush after an epoch's
	// length, and signs with the identity key instead when it is later than this (after a freeze, a
	// stalled disk or a clock step forward).
	EpochSlack = 2 * time.Second

	// DefaultGrace is how much longer than the heartbeat interval a silence may last before it is
	// reported (verify --grace, the store's silence alarm).
	DefaultGrace = 5 * time.Second
	// DefaultHeartbeat is the writer's default heartbeat interval, and the interval a verifier assumes
	// before it has read a START.
	DefaultHeartbeat = 10 * time.Second
)
