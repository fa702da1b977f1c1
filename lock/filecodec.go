package lock

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/tandem-go/tandem/ident"
)

// A lease file of the file store is a few lines of text:
//
//	tandem-lease 1
//	name <lease name>
//	owner <owner's node id>
//	instance <owner's instance id, Go-quoted>
//	token <decimal, >= 1: the fencing token>
//	heartbeat <decimal, >= 0: renewals since the acquisition>
//	ttl-ms <decimal, >= 1: the TTL of the last acquire or renew, rounded up>
//	nonce <16 hex digits: random, new on every acquisition>
//	acquired <RFC 3339 time, UTC, the acquiring node's clock; informational>
//	released no | <RFC 3339 time, UTC, the releasing node's clock>
//	crc32c <8 hex digits: CRC-32C of the lines above, newlines included>
//
// Observers compare (owner, instance, token, heartbeat, nonce); the nonce
// keeps a lease file recreated from scratch (token 1 again) from looking
// like one an observer has been watching.
const fileLeaseMagic = "tandem-lease 1"

const fileTimeFmt = time.RFC3339Nano

var fileCRC = crc32.MakeTable(crc32.Castagnoli)

// leaseFile is the content of a lease file.
type leaseFile struct {
	Name       string
	Owner      Owner
	Token      int64
	Heartbeat  int64
	TTL        time.Duration
	Nonce      uint64
	Acquired   time.Time
	Released   bool
	ReleasedAt time.Time
}

// leaseKey identifies one write of a lease by its holder: an acquisition
// or a renewal. No two writes share one.
type leaseKey struct {
	owner     Owner
	token     int64
	heartbeat int64
	nonce     uint64
}

func (l *leaseFile) key() leaseKey {
	return leaseKey{owner: l.Owner, token: l.Token, heartbeat: l.Heartbeat, nonce: l.Nonce}
}

func (l *leaseFile) released() bool { return l.Released }

// heldBy reports whether the lease is (owner, token) and not released.
func (l *leaseFile) heldBy(owner Owner, token int64) bool {
	return !l.Released && l.Owner == owner && l.Token == token
}

func newNonce() uint64 {
	var b [8]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails
	return binary.LittleEndian.Uint64(b[:])
}

// ttlMillis rounds ttl up to whole milliseconds, so that observers never
// wait less than the holder relies on.
func ttlMillis(ttl time.Duration) int64 {
	return int64((ttl + time.Millisecond - 1) / time.Millisecond)
}

func encodeLease(l *leaseFile) []byte {
	var sb strings.Builder
	sb.WriteString(fileLeaseMagic + "\n")
	sb.WriteString("name " + l.Name + "\n")
	sb.WriteString("owner " + l.Owner.NodeID + "\n")
	sb.WriteString("instance " + strconv.Quote(l.Owner.Instance) + "\n")
	sb.WriteString("token " + strconv.FormatInt(l.Token, 10) + "\n")
	sb.WriteString("heartbeat " + strconv.FormatInt(l.Heartbeat, 10) + "\n")
	sb.WriteString("ttl-ms " + strconv.FormatInt(ttlMillis(l.TTL), 10) + "\n")
	sb.WriteString(fmt.Sprintf("nonce %016x\n", l.Nonce))
	sb.WriteString("acquired " + l.Acquired.UTC().Format(fileTimeFmt) + "\n")
	if l.Released {
		sb.WriteString("released " + l.ReleasedAt.UTC().Format(fileTimeFmt) + "\n")
	} else {
		sb.WriteString("released no\n")
	}
	body := sb.String()
	return fmt.Appendf(nil, "%scrc32c %08x\n", body, crc32.Checksum([]byte(body), fileCRC))
}

// decodeLease parses a lease file strictly: the exact lines in the exact
// order, valid values, and a matching CRC.
func decodeLease(b []byte) (*leaseFile, error) {
	if len(b) > 2048 {
		return nil, errors.New("longer than 2 KiB")
	}
	s := string(b)
	i := strings.LastIndex(strings.TrimSuffix(s, "\n"), "\n")
	if i < 0 || !strings.HasSuffix(s, "\n") {
		return nil, errors.New("truncated")
	}
	body, last := s[:i+1], strings.TrimSuffix(s[i+1:], "\n")
	sum, ok := strings.CutPrefix(last, "crc32c ")
	if !ok || len(sum) != 8 {
		return nil, errors.New("no crc32c line")
	}
	want, err := strconv.ParseUint(sum, 16, 32)
	if err != nil || fmt.Sprintf("%08x", want) != sum {
		return nil, errors.New("malformed crc32c line")
	}
	if crc32.Checksum([]byte(body), fileCRC) != uint32(want) {
		return nil, errors.New("checksum mismatch")
	}
	lines := strings.Split(strings.TrimSuffix(body, "\n"), "\n")
	if len(lines) != 10 || lines[0] != fileLeaseMagic {
		return nil, errors.New("not a tandem lease file (version 1)")
	}
	keys := []string{"name", "owner", "instance", "token", "heartbeat", "ttl-ms", "nonce", "acquired", "released"}
	v := make(map[string]string, len(keys))
	for k, key := range keys {
		val, ok := strings.CutPrefix(lines[k+1], key+" ")
		if !ok {
			return nil, fmt.Errorf("line %d: want %s", k+2, key)
		}
		v[key] = val
	}
	l := &leaseFile{Name: v["name"], Owner: Owner{NodeID: v["owner"]}}
	if err := ident.LeaseName("name", l.Name); err != nil {
		return nil, err
	}
	if err := ident.NodeID("owner", l.Owner.NodeID); err != nil {
		return nil, err
	}
	if l.Owner.Instance, err = strconv.Unquote(v["instance"]); err != nil || l.Owner.Instance == "" {
		return nil, fmt.Errorf("bad instance %s", v["instance"])
	}
	if l.Token, err = strconv.ParseInt(v["token"], 10, 64); err != nil || l.Token < 1 {
		return nil, fmt.Errorf("bad token %q", v["token"])
	}
	if l.Heartbeat, err = strconv.ParseInt(v["heartbeat"], 10, 64); err != nil || l.Heartbeat < 0 {
		return nil, fmt.Errorf("bad heartbeat %q", v["heartbeat"])
	}
	ms, err := strconv.ParseInt(v["ttl-ms"], 10, 64)
	if err != nil || ms < 1 || ms > math.MaxInt64/int64(time.Millisecond) {
		return nil, fmt.Errorf("bad ttl-ms %q", v["ttl-ms"])
	}
	l.TTL = time.Duration(ms) * time.Millisecond
	if l.Nonce, err = strconv.ParseUint(v["nonce"], 16, 64); err != nil || fmt.Sprintf("%016x", l.Nonce) != v["nonce"] {
		return nil, fmt.Errorf("bad nonce %q", v["nonce"])
	}
	if l.Acquired, err = time.Parse(fileTimeFmt, v["acquired"]); err != nil {
		return nil, fmt.Errorf("bad acquired time %q", v["acquired"])
	}
	l.Acquired = l.Acquired.UTC()
	if r := v["released"]; r != "no" {
		if l.ReleasedAt, err = time.Parse(fileTimeFmt, r); err != nil {
			return nil, fmt.Errorf("bad released time %q", r)
		}
		l.Released, l.ReleasedAt = true, l.ReleasedAt.UTC()
	}
	return l, nil
}
