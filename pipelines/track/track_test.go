package track

import (
	"image"
	"testing"
)

func box(x, y int) image.Rectangle { return image.Rect(x, y, x+20, y+50) }

func TestTwoWalkersCrossing(t *testing.T) {
	tr := New(DefaultConfig)
	var a, b int64
	for f := 0; f < 60; f++ {
		// A walks right, B walks left, B a little lower: their boxes overlap (30 of 50 rows),
		// and around frame 29 they pass through each other.
		boxA, boxB := box(10+5*f, 100), box(300-5*f, 120)
		got := tr.Update([]Observation{{boxA, 0.9}, {boxB, 0.9}})
		idOf := func(want image.Rectangle) int64 {
			for _, g := range got {
				if g.Box == want {
					return g.ID
				}
			}
			t.Fatalf("frame %d: no track on %v among %v", f, want, got)
			return 0
		}
		if f == 0 {
			a, b = idOf(boxA), idOf(boxB)
			continue
		}
		if ga, gb := idOf(boxA), idOf(boxB); ga != a || gb != b {
			t.Fatalf("frame %d (boxes overlap %v): ids %d %d, want %d %d", f, !boxA.Intersect(boxB).Empty(), ga, gb, a, b)
		}
	}
}

func TestOcclusionKeepsTheID(t *testing.T) {
	tr := New(DefaultConfig)
	first := tr.Update([]Observation{{box(0, 0), 0.9}})[0].ID
	for f := 1; f < 10; f++ {
		tr.Update([]Observation{{box(4*f, 0), 0.9}})
	}
	for f := 10; f < 18; f++ { // hidden behind a pillar for 8 frames
		tr.Update(nil)
	}
	got := tr.Update([]Observation{{box(4*18, 0), 0.9}})[0]
	if got.ID != first {
		t.Errorf("after an occlusion: id %d, want %d (the prediction should carry it)", got.ID, first)
	}
}

func TestLostTracksEnd(t *testing.T) {
	tr := New(Config{MaxMissed: 3, MinIoU: 0.25, MaxCentreShift: 0.5})
	id := tr.Update([]Observation{{box(0, 0), 0.9}})[0].ID
	for i := 0; i < 4; i++ {
		tr.Update(nil)
	}
	if len(tr.Active()) != 0 {
		t.Fatalf("%d tracks alive after 4 missed frames, want 0", len(tr.Active()))
	}
	if again := tr.Update([]Observation{{box(0, 0), 0.9}})[0].ID; again == id {
		t.Error("an ended track came back")
	}
}

// TestTracksBounded: a camera that sees noise gives a new box every frame; the tracks
// followed at once stay within the bound, and the ones already followed go on.
func TestTracksBounded(t *testing.T) {
	cfg := DefaultConfig
	cfg.MaxTracks = 5
	tr := New(cfg)
	person := image.Rect(10, 10, 60, 160)
	for f := range 100 {
		obs := []Observation{{Box: person, Score: 0.9}}
		for i := range 10 { // ten boxes that never overlap anything before them
			x := 100 + 30*((f*10+i)%200)
			obs = append(obs, Observation{Box: image.Rect(x, 500, x+20, 540), Score: 0.9})
		}
		out := tr.Update(obs)
		if out[0] == nil || out[0].ID != 1 {
			t.Fatalf("frame %d: the person followed from the start lost their track: %+v", f, out[0])
		}
		if len(tr.tracks) > cfg.MaxTracks {
			t.Fatalf("frame %d: %d tracks, want at most %d", f, len(tr.tracks), cfg.MaxTracks)
		}
	}
}

// TestAWeakBoxThatStaysStartsATrack: a person already lying when the camera starts scores
// under the threshold that starts a track; found at the same place for Persist frames, they
// are followed. A weak box that does not stay, or that is part of a person already followed,
// starts none.
func TestAWeakBoxThatStaysStartsATrack(t *testing.T) {
	cfg := DefaultConfig
	cfg.MinScore, cfg.WeakStart, cfg.Persist = 0.65, 0.3, 5
	lying := image.Rect(100, 200, 220, 250)
	tr := New(cfg)
	for f := 1; f <= 5; f++ {
		got := tr.Update([]Observation{{lying.Add(image.Pt(f%2, 0)), 0.4}})
		if f < 5 && got[0] != nil {
			t.Fatalf("frame %d: a weak box started a track before persisting", f)
		}
		if f == 5 && got[0] == nil {
			t.Fatalf("frame 5: a weak box found on 5 frames started no track")
		}
	}
	// Flickering at different places, too weak, or narrow (a standing person partly hidden):
	// nothing.
	tr = New(cfg)
	for f := 1; f <= 20; f++ {
		x := 200 * (f % 4)
		got := tr.Update([]Observation{{image.Rect(x, 0, x+60, 40), 0.4}, {lying, 0.25}, {box(0, 300), 0.5}})
		if got[0] != nil || got[1] != nil || got[2] != nil {
			t.Fatalf("frame %d: a track from a box that moves about, scores 0.25 or is narrow", f)
		}
	}
	// Without WeakStart, weak boxes start nothing (and are no trouble).
	tr = New(Config{MaxMissed: 15, MinIoU: 0.25, MinScore: 0.65})
	for f := 1; f <= 20; f++ {
		if got := tr.Update([]Observation{{lying, 0.4}}); got[0] != nil {
			t.Fatalf("frame %d: a weak box started a track with WeakStart unset", f)
		}
	}
	// A weak box inside a followed person's box is that person found in part.
	tr = New(cfg)
	person := image.Rect(100, 100, 160, 260)
	for f := 1; f <= 20; f++ {
		got := tr.Update([]Observation{{person, 0.9}, {image.Rect(100, 200, 160, 260), 0.4}})
		if got[1] != nil {
			t.Fatalf("frame %d: a weak box within a followed person started track %d", f, got[1].ID)
		}
	}
}
