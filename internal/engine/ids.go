package engine

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"strconv"
	"time"
)

const crockford = "0123456789abcdefghjkmnpqrstvwxyz"

// NewRunID returns a 26-character id that sorts by creation time: 48 bits of milliseconds and
// 80 random bits in Crockford base32.
func NewRunID(now time.Time) string {
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], uint64(now.UnixMilli())<<16)
	if _, err := rand.Read(b[6:]); err != nil {
		panic(err) // crypto/rand does not fail on supported platforms
	}
	var out [26]byte
	// 128 bits as 26 groups of 5 bits, most significant first (the top group has 3 bits).
	hi, lo := binary.BigEndian.Uint64(b[:8]), binary.BigEndian.Uint64(b[8:])
	for i := 25; i >= 0; i-- {
		out[i] = crockford[lo&31]
		lo = lo>>5 | hi<<59
		hi >>= 5
	}
	return string(out[:])
}

// StepKey derives the idempotency key of one step (and for_each item) of a run. It depends only
// on the run key, so retries, resumes and replays send the same key: the first 32 hex digits of
// the SHA-256 of "pipectl/step/v1", the pipeline, the run key, the step id and the item index,
// each followed by a NUL byte. It is built in one buffer, as it is computed for every attempt.
func StepKey(pipeline, idempotencyKey, stepID string, item int) string {
	var stack [256]byte
	b := append(stack[:0], "pipectl/step/v1\x00"...)
	b = append(append(b, pipeline...), 0)
	b = append(append(b, idempotencyKey...), 0)
	b = append(append(b, stepID...), 0)
	b = append(strconv.AppendInt(b, int64(item), 10), 0)
	sum := sha256.Sum256(b)
	var out [32]byte
	hex.Encode(out[:], sum[:16])
	return string(out[:])
}

// Hash is the hex SHA-256 of data.
func Hash(data []byte) string {
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}
