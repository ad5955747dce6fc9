package inference

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"testing"
	"time"
)

// waitFor spins until cond holds: the worker goroutine gets there in microseconds, and a test
// that never gets there is stopped by go test's timeout.
func waitFor(cond func() bool) {
	for !cond() {
		time.Sleep(50 * time.Microsecond)
	}
}

func TestRunRefusesWhenQueueIsFull(t *testing.T) {
	e := openEngine(t, Config{Workers: 1, QueueDepth: 1})
	s := loadModel(t, e, "fastestdet")
	in := detectorInput(t, grey(352, 352))
	w := s.workers[0]
	w.busy.Lock() // the only worker will hold its next request
	first := make(chan error, 1)
	go func() {
		_, err := s.Run(context.Background(), []Tensor{in})
		first <- err
	}()
	waitFor(func() bool { runs, _ := s.Stats(); return runs == 1 })
	ctx, cancel := context.WithCancel(context.Background())
	queued := make(chan error, 1)
	go func() {
		_, err := s.Run(ctx, []Tensor{in})
		queued <- err
	}()
	waitFor(func() bool { return s.queued() == 1 })
	if _, err := s.Run(context.Background(), []Tensor{in}); !errors.Is(err, ErrOverloaded) {
		t.Errorf("got %v, want ErrOverloaded when the queue is full", err)
	}
	cancel()
	if err := <-queued; !errors.Is(err, context.Canceled) {
		t.Errorf("queued run after cancel: got %v, want context.Canceled", err)
	}
	w.busy.Unlock()
	if err := <-first; err != nil {
		t.Errorf("the held run: %v", err)
	}
	if n := s.queued(); n != 0 {
		t.Errorf("%d requests queued after the cancelled one left, want 0", n)
	}
	if _, err := s.Run(context.Background(), []Tensor{in}); err != nil {
		t.Errorf("after the queue drained: %v", err)
	}
	// The cancelled request was dropped, not run: the held run and the last one ran.
	if runs, items := s.Stats(); runs != 2 || items != 2 {
		t.Errorf("stats: %d runs of %d items, want 2 of 2", runs, items)
	}
}

// segmentationInput is a random 1x1x128x128 image for the demo model.
func segmentationInput(t testing.TB, seed uint64) Tensor {
	r := rand.New(rand.NewPCG(seed, 1))
	pix := make([]float32, 128*128)
	for i := range pix {
		pix[i] = r.Float32()
	}
	in, err := NewTensor([]int64{1, 1, 128, 128}, pix)
	if err != nil {
		t.Fatal(err)
	}
	return in
}

// TestBatchingJoinsQueuedRequests holds the only worker while requests queue, then checks that
// they ran as one batch and that each caller got its own image's result, the same as running
// it alone.
func TestBatchingJoinsQueuedRequests(t *testing.T) {
	e := openEngine(t, Config{Workers: 1})
	s := loadModel(t, e, "us-lesion-demo")
	if batch, delay := s.Batching(); batch != 8 || delay != 0 {
		t.Fatalf("us-lesion-demo batching: %d, %v; want 8 and 0 (its manifest)", batch, delay)
	}
	const n = 6
	inputs := make([]Tensor, n)
	alone := make([][]float32, n)
	for i := range inputs {
		inputs[i] = segmentationInput(t, uint64(i))
		alone[i], _ = Values[float32](run(t, s, inputs[i]))
	}
	runs0, items0 := s.Stats()
	if runs0 != n || items0 != n {
		t.Fatalf("one at a time: %d runs of %d items, want %d of %d", runs0, items0, n, n)
	}

	w := s.workers[0]
	w.busy.Lock()
	got := make([][]float32, n)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	submit := func(i int) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out, err := s.Run(context.Background(), []Tensor{inputs[i]})
			if err != nil {
				errs <- err
				return
			}
			got[i], _ = Values[float32](out[0])
		}()
	}
	submit(0) // the worker takes it and waits for busy
	waitFor(func() bool { runs, _ := s.Stats(); return runs == runs0+1 })
	for i := 1; i < n; i++ {
		submit(i)
	}
	waitFor(func() bool { return s.queued() == n-1 })
	w.busy.Unlock()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	runs, items := s.Stats()
	if runs-runs0 != 2 || items-items0 != n {
		t.Errorf("batched: %d runs of %d items, want 2 runs (the held one, then the other %d together) of %d", runs-runs0, items-items0, n-1, n)
	}
	for i := range got {
		if len(got[i]) != len(alone[i]) {
			t.Fatalf("request %d: %d values, want %d", i, len(got[i]), len(alone[i]))
		}
		for k := range got[i] {
			if d := got[i][k] - alone[i][k]; d > 1e-4 || d < -1e-4 {
				t.Fatalf("request %d value %d: %v in a batch, %v alone", i, k, got[i][k], alone[i][k])
			}
		}
	}
}

// TestFixedBatchModelIsNotBatched: FastestDet's batch dimension is fixed at 1, so it never
// batches, whatever its manifest asks.
func TestFixedBatchModelIsNotBatched(t *testing.T) {
	e := openEngine(t, Config{Workers: 1})
	s := loadModel(t, e, "fastestdet")
	if batch, _ := s.Batching(); batch != 1 {
		t.Errorf("fastestdet batches %d, want 1", batch)
	}
	m := *s.Manifest()
	m.Batching.MaxBatch = 8
	s2, err := e.Load(&m, s.Path())
	if err != nil {
		t.Fatal(err)
	}
	if batch, _ := s2.Batching(); batch != 1 {
		t.Errorf("fastestdet asked to batch 8 batches %d, want 1 (its batch dimension is fixed)", batch)
	}
}

// TestRunIntoFillsTheCallersTensors and allocates nothing per run beyond onnxruntime_go's own
// bookkeeping.
func TestRunIntoFillsTheCallersTensors(t *testing.T) {
	e := openEngine(t, Config{Workers: 1})
	s := loadModel(t, e, "fastestdet")
	in := detectorInput(t, walkersFrame(t, walkersTestFrame))
	want, _ := Values[float32](run(t, s, in))
	out, _ := NewTensor([]int64{1, 85, 22, 22}, make([]float32, 85*22*22))
	inputs, outputs := []Tensor{in}, []Tensor{out}
	if err := s.RunInto(context.Background(), inputs, outputs); err != nil {
		t.Fatal(err)
	}
	got, _ := Values[float32](out)
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("value %d: %v into the caller's tensor, %v from Run", i, got[i], want[i])
		}
	}
	allocs := testing.AllocsPerRun(20, func() {
		if err := s.RunInto(context.Background(), inputs, outputs); err != nil {
			t.Fatal(err)
		}
	})
	// onnxruntime_go makes two slices of native handles per run and a small header per
	// tensor (here one in, one out); Vigil adds nothing.
	if !raceEnabled && allocs > 4 {
		t.Errorf("RunInto allocates %v times a run, want at most 4", allocs)
	}
	wrong, _ := NewTensor([]int64{1, 85, 22, 21}, make([]float32, 85*22*21))
	if err := s.RunInto(context.Background(), inputs, []Tensor{wrong}); !errors.Is(err, ErrBadInput) {
		t.Errorf("RunInto with a tensor of the wrong shape: got %v, want ErrBadInput", err)
	}
}

// TestCloseWaitsForRunsAndFailsTheQueued: Close lets the run under way finish, fails what is
// still queued with ErrClosed, and later runs get ErrClosed.
func TestCloseWaitsForRunsAndFailsTheQueued(t *testing.T) {
	e := openEngine(t, Config{Workers: 1})
	s := loadModel(t, e, "us-lesion-demo")
	in := segmentationInput(t, 7)
	w := s.workers[0]
	w.busy.Lock()
	results := make(chan error, 3)
	for range 3 {
		go func() {
			_, err := s.Run(context.Background(), []Tensor{in})
			results <- err
		}()
	}
	var running int64
	waitFor(func() bool { _, running = s.Stats(); return running+int64(s.queued()) == 3 })
	closed := make(chan error)
	go func() { closed <- s.Close() }()
	waitFor(s.closed.Load)
	w.busy.Unlock()
	var ok, refused int64
	for range 3 {
		switch err := <-results; {
		case err == nil:
			ok++
		case errors.Is(err, ErrClosed):
			refused++
		default:
			t.Errorf("a run when the session closed: %v", err)
		}
	}
	if ok != running || refused != 3-running {
		t.Errorf("%d runs finished and %d were refused; want the %d under way to finish and the rest refused", ok, refused, running)
	}
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
	if _, err := s.Run(context.Background(), []Tensor{in}); !errors.Is(err, ErrClosed) {
		t.Errorf("after Close: got %v, want ErrClosed", err)
	}
}

// TestRunReadsTheCallersTensorEachTime: a worker keeps its view of a caller's tensor between
// runs, and must see what the caller wrote into it since, not a copy from before.
func TestRunReadsTheCallersTensorEachTime(t *testing.T) {
	e := openEngine(t, Config{Workers: 1})
	s := loadModel(t, e, "fastestdet")
	walkers := detectorInput(t, walkersFrame(t, walkersTestFrame))
	blank := detectorInput(t, grey(352, 352))
	wantBlank, _ := Values[float32](run(t, s, blank))

	mine := walkers.Clone()
	out, _ := NewTensor([]int64{1, 85, 22, 22}, make([]float32, 85*22*22))
	if err := s.RunInto(context.Background(), []Tensor{mine}, []Tensor{out}); err != nil {
		t.Fatal(err)
	}
	src, _ := Values[float32](blank)
	dst, _ := Values[float32](mine)
	copy(dst, src) // the caller reuses its tensor for another frame
	if err := s.RunInto(context.Background(), []Tensor{mine}, []Tensor{out}); err != nil {
		t.Fatal(err)
	}
	got, _ := Values[float32](out)
	for i := range wantBlank {
		if got[i] != wantBlank[i] {
			t.Fatalf("value %d: %v from the rewritten tensor, %v from a fresh one: the run read stale input", i, got[i], wantBlank[i])
		}
	}
	// More tensors than a worker keeps views of: the oldest go, and nothing leaks (TestMain
	// counts the native handles).
	for range 2 * maxViews {
		if err := s.RunInto(context.Background(), []Tensor{walkers.Clone()}, []Tensor{out}); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(s.workers[0].views.list); n != maxViews {
		t.Errorf("the worker keeps %d views, want %d", n, maxViews)
	}
}
