package review

import (
	"context"
	"sort"
	"sync"
	"time"
)

// ChangeFeed is a Store whose Changes are read from the database once for every watcher in
// the process. Without it, each open Watch (every reviewer's page, every PACS worker) reads
// the new audit records itself at each change: watchers x changes reads. With it, one reader
// keeps the newest records in memory and watchers take them from there: one read per change
// per replica. A watcher resuming from further back than the feed keeps, or from ahead of
// what it has read yet, reads from the store as before.
//
// The records it returns are shared between callers: read them, never change them.
type ChangeFeed struct {
	Store
	keep int

	mu      sync.Mutex
	tail    []AuditRecord // the newest records read, contiguous, oldest first
	last    int64         // the sequence of the newest record read
	changed chan struct{} // closed when tail grows

	stop context.CancelFunc
	done chan struct{}
}

// feedBatch is how many records the feed reads at a time.
const feedBatch = 500

// NewChangeFeed starts the feed on s from its newest record, keeping the newest keep records.
func NewChangeFeed(ctx context.Context, s Store, keep int) (*ChangeFeed, error) {
	last, err := s.LastSequence(ctx)
	if err != nil {
		return nil, err
	}
	f := &ChangeFeed{Store: s, keep: max(keep, feedBatch), last: last, changed: make(chan struct{}), done: make(chan struct{})}
	runCtx, stop := context.WithCancel(context.Background())
	f.stop = stop
	go f.run(runCtx)
	return f, nil
}

// run reads what the store commits, as it commits it, until Close. A failed read (the
// database gone) is tried again every second; watchers wait meanwhile.
func (f *ChangeFeed) run(ctx context.Context) {
	defer close(f.done)
	for {
		wake := f.Store.Changed()
		retry := f.readNew(ctx)
		var again <-chan time.Time
		if retry {
			again = time.After(time.Second)
		}
		select {
		case <-wake:
		case <-again:
		case <-ctx.Done():
			return
		}
	}
}

// readNew appends every record after the last one read; it says whether a read failed.
func (f *ChangeFeed) readNew(ctx context.Context) (failed bool) {
	for {
		f.mu.Lock()
		after := f.last
		f.mu.Unlock()
		recs, err := f.Store.Changes(ctx, after, feedBatch)
		if err != nil {
			return ctx.Err() == nil
		}
		if len(recs) == 0 {
			return false
		}
		f.mu.Lock()
		f.tail = append(f.tail, recs...)
		if over := len(f.tail) - f.keep; over > 0 {
			f.tail = append(f.tail[:0:0], f.tail[over:]...)
		}
		f.last = recs[len(recs)-1].Sequence
		close(f.changed)
		f.changed = make(chan struct{})
		f.mu.Unlock()
		if len(recs) < feedBatch {
			return false
		}
	}
}

// Changed returns a channel closed when the feed has read new records.
func (f *ChangeFeed) Changed() <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.changed
}

// Changes returns up to limit records after sequence: from memory when the feed holds them,
// else from the store.
func (f *ChangeFeed) Changes(ctx context.Context, after int64, limit int) ([]AuditRecord, error) {
	f.mu.Lock()
	if after == f.last {
		f.mu.Unlock()
		return nil, nil // nothing new read yet: wait on Changed
	}
	if n := len(f.tail); n > 0 && after >= f.tail[0].Sequence-1 && after < f.last {
		i := sort.Search(n, func(i int) bool { return f.tail[i].Sequence > after })
		out := append([]AuditRecord(nil), f.tail[i:min(i+limit, n)]...)
		f.mu.Unlock()
		return out, nil
	}
	f.mu.Unlock()
	return f.Store.Changes(ctx, after, limit)
}

// Close stops the feed and closes the store.
func (f *ChangeFeed) Close() error {
	f.stop()
	<-f.done
	return f.Store.Close()
}
