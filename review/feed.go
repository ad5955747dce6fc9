package review

import (
	"context"
	"sort"
	"sync"
)

// ChangeFeed is a Store whose Changes are read from the database once for all the watchers
// in the process. Without it, each open Watch (every reviewer's page, every PACS worker) reads
// the new audit records itself at each change: watchers x changes reads. With it, the first
// watcher to ask after a change reads the new records, and the feed keeps the newest ones in
// memory for the others: about one read per change per replica, and none when nobody watches.
// A watcher resuming from further back than the feed keeps reads the store as before.
//
// The records it returns are shared between callers: read them, never change them.
type ChangeFeed struct {
	Store
	keep int

	read sync.Mutex // one read of the store at a time; the others wait and find its records

	mu   sync.Mutex
	tail []AuditRecord // the newest records read, contiguous, oldest first
	last int64         // the tail is complete up to this sequence (when have)
	have bool
	// readAt is the store's Changed channel as it was just before the last read: while the
	// store still returns it, nothing has been committed since, and a watcher that has
	// everything up to last has everything.
	readAt <-chan struct{}
}

// feedBatch is how many records one read of the store takes.
const feedBatch = 500

// NewChangeFeed wraps s, keeping the newest keep records (at least feedBatch).
func NewChangeFeed(s Store, keep int) *ChangeFeed {
	return &ChangeFeed{Store: s, keep: max(keep, feedBatch)}
}

// Changes returns up to limit records after sequence: from memory when the feed holds them
// (or knows there are none yet), else from one read of the store shared with every watcher
// that asks meanwhile.
func (f *ChangeFeed) Changes(ctx context.Context, after int64, limit int) ([]AuditRecord, error) {
	if recs, ok := f.held(after, limit); ok {
		return recs, nil
	}
	f.read.Lock()
	defer f.read.Unlock()
	if recs, ok := f.held(after, limit); ok {
		return recs, nil // read by another watcher while this one waited
	}
	f.mu.Lock()
	extends := f.have && after == f.last
	before := f.have && len(f.tail) > 0 && after < f.tail[0].Sequence-1
	f.mu.Unlock()
	if before {
		return f.Store.Changes(ctx, after, limit) // older than the feed keeps
	}
	wake := f.Store.Changed()
	recs, err := f.Store.Changes(ctx, after, feedBatch)
	if err != nil {
		return nil, err
	}
	f.mu.Lock()
	if extends {
		f.tail = append(f.tail, recs...)
	} else {
		// The first read, or a watcher ahead of the tail: the tail starts again after it.
		f.tail = append([]AuditRecord(nil), recs...)
	}
	if over := len(f.tail) - f.keep; over > 0 {
		f.tail = append([]AuditRecord(nil), f.tail[over:]...)
	}
	f.last = after
	if len(recs) > 0 {
		f.last = recs[len(recs)-1].Sequence
	}
	f.have = true
	if len(recs) < feedBatch {
		f.readAt = wake // everything committed before the read began is in the tail
	} else {
		f.readAt = nil // more to read: the next caller reads on
	}
	f.mu.Unlock()
	return recs[:min(limit, len(recs))], nil
}

// held answers from memory when it can.
func (f *ChangeFeed) held(after int64, limit int) ([]AuditRecord, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.have {
		return nil, false
	}
	if after == f.last {
		// Caught up: nothing new unless the store has changed since the last read began.
		return nil, f.readAt != nil && f.Store.Changed() == f.readAt
	}
	if n := len(f.tail); n > 0 && after >= f.tail[0].Sequence-1 && after < f.last {
		i := sort.Search(n, func(i int) bool { return f.tail[i].Sequence > after })
		return append([]AuditRecord(nil), f.tail[i:min(i+limit, n)]...), true
	}
	return nil, false
}
