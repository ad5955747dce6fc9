package review

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// countingStore counts the reads of the audit.
type countingStore struct {
	Store
	reads atomic.Int64
}

func (c *countingStore) Changes(cx context.Context, after int64, limit int) ([]AuditRecord, error) {
	c.reads.Add(1)
	return c.Store.Changes(cx, after, limit)
}

// watch runs the Watch loop the server runs, until it has n records after from.
func watch(t *testing.T, s Store, from int64, n int) []int64 {
	var seqs []int64
	after := from
	deadline := time.After(30 * time.Second)
	for len(seqs) < n {
		changed := s.Changed()
		batch, err := s.Changes(ctx, after, 100)
		if err != nil {
			t.Error(err)
			return seqs
		}
		for _, r := range batch {
			seqs = append(seqs, r.Sequence)
			after = r.Sequence
		}
		if len(batch) > 0 {
			continue
		}
		select {
		case <-changed:
		case <-deadline:
			t.Errorf("a watcher from %d has %d of %d records after 30 s", from, len(seqs), n)
			return seqs
		}
	}
	return seqs
}

func inOrderFrom(seqs []int64, from int64) bool {
	for i, s := range seqs {
		if s != from+int64(i)+1 {
			return false
		}
	}
	return true
}

// TestChangeFeedReadsOnceForAllWatchers: 20 watchers follow 40 changes through a feed; each
// sees every change once and in order, and the store is read about once per change, not
// once per watcher and change.
func TestChangeFeedReadsOnceForAllWatchers(t *testing.T) {
	forEachStore(t, func(t *testing.T, s testStore, _ func() testStore) {
		counted := &countingStore{Store: s}
		feed := NewChangeFeed(counted, 100)
		// Nobody watching: writes cost the feed nothing.
		add(t, s, finding("feed", 1))
		if n := counted.reads.Load(); n != 0 {
			t.Errorf("the feed read the store %d times with nobody watching", n)
		}
		start, err := s.LastSequence(ctx)
		if err != nil {
			t.Fatal(err)
		}
		const watchers, changes = 20, 40
		var wg sync.WaitGroup
		got := make([][]int64, watchers)
		for w := range watchers {
			wg.Add(1)
			go func() { defer wg.Done(); got[w] = watch(t, feed, start, changes) }()
		}
		for i := range changes {
			add(t, s, finding("feed", i%3))
		}
		wg.Wait()
		for w, seqs := range got {
			if len(seqs) != changes || !inOrderFrom(seqs, start) {
				t.Fatalf("watcher %d saw %v, want %d..%d", w, seqs, start+1, start+changes)
			}
		}
		if reads := counted.reads.Load(); reads > 2*changes+5 {
			t.Errorf("the store was read %d times for %d changes and %d watchers; want about one read per change", reads, changes, watchers)
		}
		t.Logf("%d watchers x %d changes: %d reads of the store", watchers, changes, counted.reads.Load())
	})
}

// TestChangeFeedResumesFromFurtherBack: a watcher resuming from before what the feed keeps
// reads the rest from the store, and still sees every record once, in order.
func TestChangeFeedResumesFromFurtherBack(t *testing.T) {
	forEachStore(t, func(t *testing.T, s testStore, _ func() testStore) {
		feed := NewChangeFeed(s, 0) // keeps the minimum, feedBatch
		batch := make([]Finding, feedBatch+150)
		for i := range batch {
			batch[i] = finding("back", 1)
		}
		add(t, s, batch...)
		if seqs := watch(t, feed, 0, len(batch)); len(seqs) != len(batch) || !inOrderFrom(seqs, 0) {
			t.Fatalf("a watcher from the start saw %d records (in order: %v), want %d", len(seqs), inOrderFrom(seqs, 0), len(batch))
		}
		if seqs := watch(t, feed, 600, 50); len(seqs) != 50 || !inOrderFrom(seqs, 600) {
			t.Fatalf("a watcher from 600 saw %v", seqs)
		}
	})
}
