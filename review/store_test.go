package review

import (
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

// finding is a valid triage finding from a study, with a priority.
func finding(study string, priority int) Finding {
	return Finding{
		Pipeline: PipelineTriage, Label: "hypoechoic lesion", Score: 0.9, Priority: priority,
		Box:          &Box{X: 10, Y: 20, Width: 30, Height: 40},
		Measurements: []Measurement{{Name: "long axis", Value: 12.5, Unit: "mm"}},
		Model:        ModelRef{Name: "us-lesion-demo", Version: "1", SHA256: "ab"},
		Source:       Source{StudyInstanceUID: study, SOPInstanceUID: study + ".1", Modality: "US", Frames: []int{3, 4}},
	}
}

func add(t testing.TB, s Store, fs ...Finding) []Finding {
	t.Helper()
	out, err := s.Add(ctx, "pacs-1", fs)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestAddAndGetWithOverlay(t *testing.T) {
	forEachStore(t, func(t *testing.T, s testStore, reopen func() testStore) {
		f := finding("1.2.3", 5)
		f.Overlay = &Image{MediaType: "image/png", Data: []byte("\x89PNG fake"), Width: 64, Height: 48}
		added := add(t, s, f)[0]
		if added.ID == "" || added.State != StatePending || added.Version != 1 || added.CreatedAt.IsZero() {
			t.Fatalf("added %+v: want an ID, pending, version 1, a creation time", added)
		}
		got, err := s.Get(ctx, added.ID)
		if err != nil {
			t.Fatal(err)
		}
		if got.Overlay == nil || string(got.Overlay.Data) != "\x89PNG fake" || got.Overlay.Width != 64 {
			t.Errorf("overlay: got %+v, want the stored PNG", got.Overlay)
		}
		if got.Box == nil || *got.Box != *f.Box || got.Measurements[0] != f.Measurements[0] || fmt.Sprint(got.Source.Frames) != "[3 4]" {
			t.Errorf("got %+v, want the fields as stored", got)
		}
		// Reopening the store finds it again.
		s2 := reopen()
		if again, err := s2.Get(ctx, added.ID); err != nil || again.Label != f.Label {
			t.Fatalf("after reopening: %+v, %v", again, err)
		}
		if _, err := s2.Get(ctx, "f-nothing"); !errors.Is(err, ErrNotFound) {
			t.Errorf("unknown id: got %v, want ErrNotFound", err)
		}
	})
}

func TestAddValidates(t *testing.T) {
	forEachStore(t, func(t *testing.T, s testStore, _ func() testStore) {
		for name, change := range map[string]func(*Finding){
			"pipeline": func(f *Finding) { f.Pipeline = "astrology" },
			"label":    func(f *Finding) { f.Label = " " },
			"score":    func(f *Finding) { f.Score = 1.5 },
			"model":    func(f *Finding) { f.Model = ModelRef{} },
			"source":   func(f *Finding) { f.Source = Source{} },
		} {
			good, bad := finding("1", 1), finding("1", 1)
			change(&bad)
			if _, err := s.Add(ctx, "x", []Finding{good, bad}); !errors.Is(err, ErrInvalid) {
				t.Errorf("%s: got %v, want ErrInvalid", name, err)
			}
		}
		if list, _, _ := s.List(ctx, Query{}); len(list) != 0 {
			t.Errorf("a rejected batch stored %d findings, want none", len(list))
		}
	})
}

func TestListOrderFiltersAndPages(t *testing.T) {
	forEachStore(t, func(t *testing.T, s testStore, _ func() testStore) {
		clock := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
		s.SetClock(func() time.Time { clock = clock.Add(time.Second); return clock })
		var want []string
		for i, p := range []int{1, 5, 3, 5, 1, 9, 3} {
			f := finding(fmt.Sprintf("study-%d", i%2), p)
			if i == 6 {
				f.Pipeline, f.Source = PipelineFall, Source{CameraID: "ward-3"}
			}
			add(t, s, f)
		}
		all, next, err := s.List(ctx, Query{PageSize: 100})
		if err != nil || next != "" {
			t.Fatalf("got next %q, %v", next, err)
		}
		for i := 1; i < len(all); i++ {
			a, b := all[i-1], all[i]
			if a.Priority < b.Priority || a.Priority == b.Priority && a.CreatedAt.After(b.CreatedAt) {
				t.Errorf("order: %d (%d, %v) before %d (%d, %v)", i-1, a.Priority, a.CreatedAt, i, b.Priority, b.CreatedAt)
			}
			want = append(want, a.ID)
		}
		want = append(want, all[len(all)-1].ID)
		// Paging two at a time walks the same list.
		var got []string
		tok := ""
		for {
			page, next, err := s.List(ctx, Query{PageSize: 2, PageToken: tok})
			if err != nil {
				t.Fatal(err)
			}
			for _, f := range page {
				got = append(got, f.ID)
			}
			if next == "" {
				break
			}
			tok = next
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("paged: %v\nwhole: %v", got, want)
		}
		falls, _, _ := s.List(ctx, Query{Filter: Filter{Pipeline: PipelineFall}})
		if len(falls) != 1 || falls[0].Source.CameraID != "ward-3" {
			t.Errorf("pipeline filter: got %d findings", len(falls))
		}
		study, _, _ := s.List(ctx, Query{Filter: Filter{StudyUID: "study-1", States: []State{StatePending}}})
		if len(study) != 3 {
			t.Errorf("study filter: got %d, want 3", len(study))
		}
		if _, _, err := s.List(ctx, Query{PageToken: "garbage!"}); !errors.Is(err, ErrInvalid) {
			t.Errorf("bad page token: got %v, want ErrInvalid", err)
		}
	})
}

// TestConcurrentClaims has many reviewers claim at once: every finding is claimed exactly once.
func TestConcurrentClaims(t *testing.T) {
	forEachStore(t, func(t *testing.T, s testStore, _ func() testStore) {
		const findings, reviewers = 120, 12
		batch := make([]Finding, findings)
		for i := range batch {
			batch[i] = finding("s", i%7)
		}
		add(t, s, batch...)
		claimedBy := claimConcurrently(t, []Store{s}, reviewers, false)
		if len(claimedBy) != findings {
			t.Errorf("claimed %d findings, want %d", len(claimedBy), findings)
		}
		c, _ := s.Counts(ctx, Filter{})
		if c.ByState[StateClaimed] != findings || c.ByState[StatePending] != 0 {
			t.Errorf("counts %v, want all %d claimed", c.ByState, findings)
		}
	})
}

// claimConcurrently has reviewers claim from the stores (reviewer r from store r mod the
// number) until the queue is empty, accepting each claim when decide is set, and fails the
// test if a finding is claimed twice. It returns who claimed what.
func claimConcurrently(t *testing.T, stores []Store, reviewers int, decide bool) map[string]string {
	var mu sync.Mutex
	claimedBy := map[string]string{}
	var wg sync.WaitGroup
	for r := range reviewers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, me := stores[r%len(stores)], fmt.Sprintf("reviewer-%d", r)
			for {
				f, ok, err := s.ClaimNext(ctx, me, Filter{}, time.Minute)
				if err != nil {
					t.Error(err)
					return
				}
				if !ok {
					return
				}
				if decide {
					if _, err := s.Decide(ctx, me, f.ID, f.Version, Decision{Outcome: OutcomeAccept}); err != nil {
						t.Error(err)
						return
					}
				}
				mu.Lock()
				if prev, dup := claimedBy[f.ID]; dup {
					t.Errorf("%s claimed by %s and %s", f.ID, prev, me)
				}
				claimedBy[f.ID] = me
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return claimedBy
}

func TestClaimOrderAndLeaseExpiry(t *testing.T) {
	forEachStore(t, func(t *testing.T, s testStore, _ func() testStore) {
		now := time.Date(2026, 1, 1, 8, 0, 0, 0, time.UTC)
		s.SetClock(func() time.Time { return now })
		low, high := add(t, s, finding("a", 1))[0], add(t, s, finding("b", 9))[0]
		first, ok, err := s.ClaimNext(ctx, "ana", Filter{}, 5*time.Minute)
		if err != nil || !ok || first.ID != high.ID || first.ClaimedBy != "ana" || first.State != StateClaimed {
			t.Fatalf("first claim: %+v %v %v; want the priority-9 finding claimed by ana", first, ok, err)
		}
		second, _, _ := s.ClaimNext(ctx, "ben", Filter{}, 5*time.Minute)
		if second.ID != low.ID {
			t.Fatalf("second claim got %s, want %s", second.ID, low.ID)
		}
		if _, ok, _ := s.ClaimNext(ctx, "cy", Filter{}, 5*time.Minute); ok {
			t.Fatal("a third claim found something; every finding is held")
		}
		// ana's lease runs out: the finding returns to the queue and cy gets it.
		now = now.Add(6 * time.Minute)
		third, ok, err := s.ClaimNext(ctx, "cy", Filter{}, 5*time.Minute)
		if err != nil || !ok || third.ID != high.ID {
			t.Fatalf("after expiry: %+v %v %v; want ana's lapsed finding", third, ok, err)
		}
		// ana's decision on the version she saw is now stale.
		if _, err := s.Decide(ctx, "ana", high.ID, first.Version, Decision{Outcome: OutcomeAccept}); !errors.Is(err, ErrStale) {
			t.Errorf("decision on a lapsed claim: got %v, want ErrStale", err)
		}
		trail, _ := s.Audit(ctx, high.ID)
		var actions []string
		for _, r := range trail {
			actions = append(actions, r.Actor+":"+r.Action)
		}
		if fmt.Sprint(actions) != "[pacs-1:create ana:claim vigil:expire cy:claim]" {
			t.Errorf("audit trail %v", actions)
		}
		// ben's lease lapsed too, and cy's claim returned it to the queue.
		if lowNow, _ := s.Get(ctx, low.ID); lowNow.State != StatePending {
			t.Errorf("ben's lapsed finding is %s, want pending", lowNow.State)
		}
		// The sweeper returns cy's claim once it lapses.
		now = now.Add(6 * time.Minute)
		if n, err := s.ExpireLeases(ctx); n != 1 || err != nil {
			t.Errorf("ExpireLeases: %d, %v; want 1", n, err)
		}
	})
}

func TestDecide(t *testing.T) {
	forEachStore(t, func(t *testing.T, s testStore, _ func() testStore) {
		f := add(t, s, finding("a", 1), finding("b", 1), finding("c", 1), finding("d", 1))
		accepted, err := s.Decide(ctx, "dr.a", f[0].ID, 1, Decision{Outcome: OutcomeAccept, Comment: "clear"})
		if err != nil {
			t.Fatal(err)
		}
		if accepted.State != StateAccepted || accepted.Version != 2 || accepted.Decision.ReasonCode != "confirmed" || accepted.Decision.Reviewer != "dr.a" {
			t.Errorf("accepted: %+v / %+v", accepted, accepted.Decision)
		}
		if _, err := s.Decide(ctx, "dr.b", f[0].ID, 2, Decision{Outcome: OutcomeReject, ReasonCode: "artefact"}); !errors.Is(err, ErrDecided) {
			t.Errorf("deciding twice: got %v, want ErrDecided", err)
		}
		amended, err := s.Decide(ctx, "dr.a", f[1].ID, 1, Decision{Outcome: OutcomeAmend, ReasonCode: "wrong-size",
			Amendment: &Amendment{Measurements: []Measurement{{Name: "long axis", Value: 9.8, Unit: "mm"}}}})
		if err != nil || amended.State != StateAmended || amended.Decision.Amendment.Measurements[0].Value != 9.8 {
			t.Fatalf("amend: %+v, %v", amended, err)
		}
		// Someone else's live claim blocks a decision; the holder may decide.
		claimed, _, _ := s.ClaimNext(ctx, "dr.c", Filter{StudyUID: "c"}, time.Hour)
		if _, err := s.Decide(ctx, "dr.a", claimed.ID, claimed.Version, Decision{Outcome: OutcomeAccept}); !errors.Is(err, ErrClaimed) {
			t.Errorf("deciding another's claim: got %v, want ErrClaimed", err)
		}
		if _, err := s.Decide(ctx, "dr.c", claimed.ID, claimed.Version, Decision{Outcome: OutcomeReject, ReasonCode: "false-positive"}); err != nil {
			t.Errorf("the holder deciding: %v", err)
		}

		bad := []Decision{
			{Outcome: "maybe"},
			{Outcome: OutcomeReject},
			{Outcome: OutcomeReject, ReasonCode: "bored"},
			{Outcome: OutcomeReject, ReasonCode: "other"},
			{Outcome: OutcomeAmend, ReasonCode: "wrong-label"},
			{Outcome: OutcomeAmend, ReasonCode: "wrong-size", Amendment: &Amendment{Box: &Box{Width: 0, Height: 3}}},
			{Outcome: OutcomeAccept, Amendment: &Amendment{Label: "cyst"}},
		}
		for _, d := range bad {
			if _, err := s.Decide(ctx, "dr.a", f[3].ID, 1, d); !errors.Is(err, ErrInvalid) {
				t.Errorf("decision %+v: got %v, want ErrInvalid", d, err)
			}
		}
		if _, err := s.Decide(ctx, "dr.a", "f-none", 1, Decision{Outcome: OutcomeAccept}); !errors.Is(err, ErrNotFound) {
			t.Errorf("unknown finding: got %v, want ErrNotFound", err)
		}
	})
}

func TestStaleDecisionChangesNothing(t *testing.T) {
	forEachStore(t, func(t *testing.T, s testStore, _ func() testStore) {
		f := add(t, s, finding("a", 1))[0]
		claimed, _, _ := s.ClaimNext(ctx, "dr.a", Filter{}, time.Hour)
		before, _ := s.Audit(ctx, f.ID)
		_, err := s.Decide(ctx, "dr.a", f.ID, f.Version, Decision{Outcome: OutcomeAccept})
		var stale *StaleError
		if !errors.As(err, &stale) || stale.Current != claimed.Version || stale.Given != f.Version {
			t.Fatalf("got %v, want a StaleError with current version %d", err, claimed.Version)
		}
		after, _ := s.Get(ctx, f.ID)
		trail, _ := s.Audit(ctx, f.ID)
		if after.Version != claimed.Version || after.State != StateClaimed || len(trail) != len(before) {
			t.Errorf("a stale decision changed the finding: version %d state %s, %d audit records (was %d)", after.Version, after.State, len(trail), len(before))
		}
	})
}

func TestRelease(t *testing.T) {
	forEachStore(t, func(t *testing.T, s testStore, _ func() testStore) {
		add(t, s, finding("a", 1))
		c, _, _ := s.ClaimNext(ctx, "dr.a", Filter{}, time.Hour)
		if _, err := s.Release(ctx, "dr.b", c.ID, c.Version); !errors.Is(err, ErrNotClaimed) {
			t.Errorf("release by another: got %v, want ErrNotClaimed", err)
		}
		r, err := s.Release(ctx, "dr.a", c.ID, c.Version)
		if err != nil || r.State != StatePending || r.ClaimedBy != "" {
			t.Fatalf("release: %+v, %v", r, err)
		}
		if again, ok, _ := s.ClaimNext(ctx, "dr.b", Filter{}, time.Hour); !ok || again.ID != c.ID {
			t.Errorf("a released finding was not claimable")
		}
	})
}

func TestAuditIsCompleteAndAppendOnly(t *testing.T) {
	forEachStore(t, func(t *testing.T, s testStore, _ func() testStore) {
		f := add(t, s, finding("a", 1))[0]
		c, _, _ := s.ClaimNext(ctx, "dr.a", Filter{}, time.Hour)
		d, _ := s.Decide(ctx, "dr.a", f.ID, c.Version, Decision{Outcome: OutcomeReject, ReasonCode: "artefact", Comment: "reverberation"})
		trail, err := s.Audit(ctx, f.ID)
		if err != nil {
			t.Fatal(err)
		}
		if len(trail) != 3 {
			t.Fatalf("got %d audit records, want create, claim, reject", len(trail))
		}
		last := trail[2]
		if last.Action != "reject" || last.Actor != "dr.a" || last.Before.State != StateClaimed || last.After.State != StateRejected ||
			last.After.Decision.Comment != "reverberation" || last.After.Version != d.Version || trail[0].Before != nil {
			t.Errorf("last record %+v", last)
		}
		attempts := []string{`UPDATE audit SET actor = 'mallory'`, `DELETE FROM audit`}
		if _, ok := s.(*Postgres); ok {
			attempts = append(attempts, `TRUNCATE audit`, `UPDATE refusals SET reason = ''`)
		}
		for _, q := range attempts {
			if err := s.raw(q); err == nil {
				t.Errorf("%s succeeded; the audit must be append-only", q)
			}
		}
		if again, _ := s.Audit(ctx, f.ID); len(again) != 3 || again[2].Actor != "dr.a" {
			t.Errorf("the audit changed")
		}
	})
}

func TestChangesResumeWithoutGapsOrRepeats(t *testing.T) {
	forEachStore(t, func(t *testing.T, s testStore, _ func() testStore) {
		changed := s.Changed()
		fs := add(t, s, finding("a", 1), finding("b", 2))
		select {
		case <-changed:
		default:
			t.Fatal("Changed did not fire after a commit")
		}
		s.ClaimNext(ctx, "dr.a", Filter{}, time.Hour)
		s.Decide(ctx, "dr.b", fs[0].ID, 1, Decision{Outcome: OutcomeAccept})
		var seqs []int64
		after := int64(0)
		for {
			batch, err := s.Changes(ctx, after, 2)
			if err != nil {
				t.Fatal(err)
			}
			if len(batch) == 0 {
				break
			}
			for _, r := range batch {
				seqs = append(seqs, r.Sequence)
			}
			after = batch[len(batch)-1].Sequence
		}
		if len(seqs) != 4 || !sort.SliceIsSorted(seqs, func(i, j int) bool { return seqs[i] < seqs[j] }) {
			t.Errorf("got sequences %v, want 4 increasing", seqs)
		}
		if last, _ := s.LastSequence(ctx); last != seqs[len(seqs)-1] {
			t.Errorf("LastSequence %d, want %d", last, seqs[len(seqs)-1])
		}
	})
}

func TestCountsAndAcceptance(t *testing.T) {
	forEachStore(t, func(t *testing.T, s testStore, _ func() testStore) {
		v2 := finding("x", 1)
		v2.Model.Version = "2"
		fs := add(t, s, finding("a", 1), finding("b", 1), finding("c", 1), finding("d", 1), v2)
		s.Decide(ctx, "r", fs[0].ID, 1, Decision{Outcome: OutcomeAccept})
		s.Decide(ctx, "r", fs[1].ID, 1, Decision{Outcome: OutcomeReject, ReasonCode: "false-positive"})
		s.Decide(ctx, "r", fs[2].ID, 1, Decision{Outcome: OutcomeAmend, ReasonCode: "wrong-label", Amendment: &Amendment{Label: "cyst"}})
		c, err := s.Counts(ctx, Filter{})
		if err != nil {
			t.Fatal(err)
		}
		if c.ByState[StatePending] != 2 || c.ByState[StateAccepted] != 1 || c.ByState[StateRejected] != 1 || c.ByState[StateAmended] != 1 {
			t.Errorf("by state: %v", c.ByState)
		}
		if len(c.Models) != 2 {
			t.Fatalf("got %d model versions, want 2", len(c.Models))
		}
		v1 := c.Models[0]
		if v1.Model.Version != "1" || v1.Accepted != 1 || v1.Rejected != 1 || v1.Amended != 1 || v1.Rate() < 0.66 || v1.Rate() > 0.67 {
			t.Errorf("version 1: %+v rate %.3f, want 2 of 3", v1, v1.Rate())
		}
		if c.Models[1].Rate() != 0 {
			t.Errorf("an undecided version has rate %v, want 0", c.Models[1].Rate())
		}
	})
}

func TestValidID(t *testing.T) {
	for id, want := range map[string]bool{
		newID(): true, "f-0123456789abcdef0123": true, "": false, "f-0123456789ABCDEF0123": false,
		"f-0123456789abcdef012": false, "x-0123456789abcdef0123": false, "f-0123456789abcdef012g": false,
		"PATIENT^NAME": false,
	} {
		if got := ValidID(id); got != want {
			t.Errorf("ValidID(%q) = %v, want %v", id, got, want)
		}
	}
}

// TestListPagesBySize: findings whose stored bodies are large (60 KB of evidence each) come
// in pages of at most MaxPageBytes, whatever page size was asked for, and paging walks every
// finding exactly once, in order.
func TestListPagesBySize(t *testing.T) {
	forEachStore(t, func(t *testing.T, s testStore, _ func() testStore) {
		const n = 40
		for i := 0; i < n; i++ {
			f := finding(fmt.Sprintf("1.2.%d", i), 1+i%3)
			f.Evidence = []string{strings.Repeat("e", 60_000)}
			add(t, s, f)
		}
		seen := map[string]bool{}
		tok, pages := "", 0
		for {
			page, next, err := s.List(ctx, Query{PageSize: MaxPageSize, PageToken: tok})
			if err != nil {
				t.Fatal(err)
			}
			pages++
			size := 0
			for _, f := range page {
				if seen[f.ID] {
					t.Errorf("finding %s came twice", f.ID)
				}
				seen[f.ID] = true
				body, _ := json.Marshal(f)
				size += len(body)
			}
			if size > MaxPageBytes+len(page)*64 { // the stored body and a re-encoding differ by a few bytes
				t.Errorf("page %d holds %d findings, %d bytes, over %d", pages, len(page), size, MaxPageBytes)
			}
			if next == "" {
				break
			}
			tok = next
		}
		if len(seen) != n || pages < 3 {
			t.Errorf("%d findings over %d pages, want %d over at least 3 (2.4 MB in pages of 1 MiB)", len(seen), pages, n)
		}
	})
}
