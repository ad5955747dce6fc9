//go:build cgo

package inference

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"time"
	"unsafe"

	ort "github.com/yalue/onnxruntime_go"

	"github.com/vigil-health/vigil/models"
)

// How a session serves requests.
//
// Requests wait in one queue. A caller that finds one of the session's workers free runs the
// queue's oldest requests itself, on its own goroutine (an uncontended call is a plain call
// into ONNX Runtime, with no handoff to another goroutine), then hands the worker back; a
// caller whose request someone else ran just takes its result.
//
// A run of one request copies nothing: ONNX Runtime reads the caller's tensors and writes into
// the caller's (RunInto), through views the worker keeps of the tensors it sees again; Run's
// outputs go through the worker's output buffers, made at load. For a model whose first
// dimension is dynamic and whose manifest asks for batching, the worker takes its share of
// what has queued (the queue split over the workers, so that one batch does not leave the
// others idle), up to max_batch items, copies them into its input buffers and runs them as one;
// with max_queue_delay above zero, the last free worker waits that long for a partial batch to
// fill. A model with other dynamic dimensions has no fixed buffers: its inputs are wrapped as
// they come and ONNX Runtime allocates its outputs.

type request struct {
	inputs, outputs []Tensor
	items           int64 // along the batch dimension; 1 for a model without one
	results         []Tensor
	err             error
	done            chan struct{}
}

var requests = sync.Pool{New: func() any { return &request{done: make(chan struct{}, 1)} }}

// start makes the workers and their buffers.
func (s *Session) start(workers, queueDepth int) error {
	s.batch = 1
	bound := fixedItems(s.inputs) && fixedItems(s.outputs)
	if bound && s.manifest.BatchDynamic() && s.manifest.Batching.MaxBatch > 1 {
		s.batch, s.maxDelay = s.manifest.Batching.MaxBatch, s.manifest.Batching.MaxQueueDelay
	}
	s.depth = queueDepth
	s.queue = make([]*request, 0, queueDepth)
	s.arrived = make(chan struct{}, 1)
	s.slots = make(chan *worker, workers)
	for range workers {
		w := &worker{s: s, timer: time.NewTimer(time.Hour)}
		w.timer.Stop()
		if bound {
			if err := w.allocate(); err != nil {
				for _, w := range append(s.workers, w) {
					w.free()
				}
				s.workers = nil
				return err
			}
		}
		s.workers = append(s.workers, w)
		s.slots <- w
	}
	return nil
}

// fixedItems says whether every dimension but the first is fixed and every element type is
// one a buffer can hold.
func fixedItems(specs []models.TensorSpec) bool {
	for _, spec := range specs {
		if _, ok := newData(spec.DType, 1); !ok {
			return false
		}
		for _, d := range spec.Shape[1:] {
			if d <= 0 {
				return false
			}
		}
	}
	return true
}

// submit validates the inputs, queues the request and waits for its worker.
func (s *Session) submit(ctx context.Context, inputs, outputs []Tensor) ([]Tensor, error) {
	if len(inputs) != len(s.inputs) {
		return nil, fmt.Errorf("%w: %s takes %d inputs, got %d", ErrBadInput, s.manifest.Name, len(s.inputs), len(inputs))
	}
	for i, spec := range s.inputs {
		if err := checkInput(spec, inputs[i]); err != nil {
			return nil, err
		}
	}
	items := int64(1)
	if s.inputs[0].Shape[0] == models.Dynamic {
		items = inputs[0].Shape[0]
		for i, in := range inputs {
			if in.Shape[0] != items {
				return nil, fmt.Errorf("%w: input %q has %d items along the batch dimension, input %q has %d", ErrBadInput, s.inputs[0].Name, items, s.inputs[i].Name, in.Shape[0])
			}
		}
	}
	if outputs != nil && s.workers[0].out != nil {
		for i, spec := range s.outputs {
			if err := checkOutput(spec, items, outputs[i]); err != nil {
				return nil, err
			}
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}

	r := requests.Get().(*request)
	r.inputs, r.outputs, r.items = inputs, outputs, items
	s.qmu.Lock()
	switch {
	case s.closed.Load():
		s.qmu.Unlock()
		recycle(r)
		return nil, ErrClosed
	case len(s.queue) >= s.depth:
		s.qmu.Unlock()
		recycle(r)
		return nil, fmt.Errorf("%w: %s has %d runs waiting", ErrOverloaded, s.manifest.Name, s.depth)
	}
	s.queue = append(s.queue, r)
	s.qmu.Unlock()
	select {
	case s.arrived <- struct{}{}:
	default:
	}
	for {
		select {
		case <-r.done:
			return r.finished()
		default:
		}
		select {
		case <-r.done:
			return r.finished()
		case w := <-s.slots:
			if s.closed.Load() {
				s.slots <- w // Close is waiting for it; it fails what is queued
				<-r.done
				return r.finished()
			}
			w.lead()
			s.slots <- w
		case <-ctx.Done():
			if s.unqueue(r) {
				recycle(r)
				return nil, ctx.Err()
			}
			<-r.done // a worker has it: it is moments from done
			return r.finished()
		}
	}
}

// finished is the request's outcome; the request goes back to the pool.
func (r *request) finished() ([]Tensor, error) {
	results, err := r.results, r.err
	recycle(r)
	return results, err
}

// unqueue takes a request out of the queue, and says whether it was still there.
func (s *Session) unqueue(r *request) bool {
	s.qmu.Lock()
	defer s.qmu.Unlock()
	for i, q := range s.queue {
		if q == r {
			s.queue = append(s.queue[:i], s.queue[i+1:]...)
			return true
		}
	}
	return false
}

// queued is how many requests wait.
func (s *Session) queued() int {
	s.qmu.Lock()
	defer s.qmu.Unlock()
	return len(s.queue)
}

func recycle(r *request) {
	r.inputs, r.outputs, r.results, r.err = nil, nil, nil, nil
	requests.Put(r)
}

// checkOutput says whether a caller's tensor can take an output of this many items.
func checkOutput(spec models.TensorSpec, items int64, t Tensor) error {
	fits := t.DType() == spec.DType && len(t.Shape) == len(spec.Shape)
	for i := 0; fits && i < len(spec.Shape); i++ {
		want := spec.Shape[i]
		if i == 0 && want == models.Dynamic {
			want = items
		}
		fits = t.Shape[i] == want
	}
	if !fits {
		want := append([]int64{items}, spec.Shape[1:]...)
		if spec.Shape[0] != models.Dynamic {
			want[0] = spec.Shape[0]
		}
		return fmt.Errorf("%w: output %q is %s %v, got a tensor of %s %v to fill", ErrBadInput, spec.Name, spec.DType, want, t.DType(), t.Shape)
	}
	return nil
}

// worker runs batches with its own buffers.
type worker struct {
	s *Session
	// busy is held while the worker runs; a test holds it to keep the worker busy.
	busy sync.Mutex
	// bound: the model's shapes are fixed apart from the batch, so the worker has output
	// buffers (and input buffers when it batches).
	bound   bool
	in, out []*buffer
	inArgs  []ort.Value
	outArgs []ort.Value
	batch   []*request
	views   views // of the callers' tensors, for runs of one request
	timer   *time.Timer
}

// buffer is room for one tensor of up to the session's batch of items, with ONNX Runtime's
// view of the first n items in values[n-1].
type buffer struct {
	data   any
	item   int64 // elements per item
	shape  []int64
	values []ort.Value
}

func (w *worker) allocate() error {
	w.bound = true
	var err error
	// Inputs are copied only into a batch: a lone request is read where the caller keeps it.
	if w.s.batch > 1 {
		if w.in, err = w.buffers(w.s.inputs); err != nil {
			return err
		}
	}
	if w.out, err = w.buffers(w.s.outputs); err != nil {
		return err
	}
	w.inArgs = make([]ort.Value, len(w.s.inputs))
	w.outArgs = make([]ort.Value, len(w.out))
	return nil
}

// buffers makes a buffer per tensor. A tensor whose first dimension is fixed is one item.
func (w *worker) buffers(specs []models.TensorSpec) ([]*buffer, error) {
	bufs := make([]*buffer, 0, len(specs))
	for _, spec := range specs {
		item, capacity := int64(1), int64(w.s.batch)
		for _, d := range spec.Shape[1:] {
			item *= d
		}
		if spec.Shape[0] != models.Dynamic {
			item, capacity = item*spec.Shape[0], 1
		}
		data, _ := newData(spec.DType, item*capacity)
		b := &buffer{data: data, item: item, shape: append([]int64(nil), spec.Shape...)}
		bufs = append(bufs, b)
		for n := int64(1); n <= capacity; n++ {
			v, err := toORT(Tensor{Shape: b.shapeOf(n), data: sliceOf(data, 0, n*item)})
			if err != nil {
				return bufs, err
			}
			track()
			b.values = append(b.values, v)
		}
	}
	return bufs, nil
}

// free destroys the worker's views of its buffers.
func (w *worker) free() error {
	w.views.free()
	for _, bufs := range [][]*buffer{w.in, w.out} {
		for _, b := range bufs {
			for _, v := range b.values {
				v.Destroy()
				untrack()
			}
			b.values = nil
		}
	}
	return nil
}

// lead runs the queue's oldest requests (its share of them, when batching) on this worker.
func (w *worker) lead() {
	w.gather()
	if len(w.batch) == 0 {
		return
	}
	w.s.runs.Add(1)
	for _, r := range w.batch {
		w.s.items.Add(r.items)
	}
	w.busy.Lock()
	w.run()
	w.busy.Unlock()
}

// gather takes the batch off the front of the queue.
func (w *worker) gather() {
	s := w.s
	w.batch = w.batch[:0]
	limit := int64(s.batch)
	s.qmu.Lock()
	if len(s.queue) == 0 {
		s.qmu.Unlock()
		return
	}
	if limit == 1 || !w.bound || s.queue[0].items > limit {
		w.take(1)
		s.qmu.Unlock()
		return
	}
	// This worker's share: the queue split over all the workers, so that a worker finishing
	// next finds its part still waiting rather than one worker running everything.
	share := (len(s.queue) + len(s.workers) - 1) / len(s.workers)
	items := w.takeUpTo(limit, share)
	s.qmu.Unlock()
	if s.maxDelay <= 0 || items >= limit || len(s.slots) > 0 {
		return
	}
	// The last free worker with a partial batch waits a little for more.
	w.timer.Reset(s.maxDelay)
	defer w.timer.Stop()
	for items < limit {
		select {
		case <-s.arrived:
			s.qmu.Lock()
			items += w.takeUpTo(limit-items, len(s.queue))
			s.qmu.Unlock()
		case <-w.timer.C:
			return
		}
	}
}

// take moves the queue's first n requests into the batch; qmu is held.
func (w *worker) take(n int) {
	q := w.s.queue
	w.batch = append(w.batch, q[:n]...)
	clear(q[:n])
	w.s.queue = append(q[:0], q[n:]...)
}

// takeUpTo takes the first requests, at most n of them, while their items fit within limit;
// qmu is held. It gives the items taken.
func (w *worker) takeUpTo(limit int64, n int) int64 {
	var items int64
	k := 0
	for k < n && k < len(w.s.queue) && items+w.s.queue[k].items <= limit {
		items += w.s.queue[k].items
		k++
	}
	w.take(k)
	return items
}

// run runs the gathered batch and hands each request its share of the outputs.
func (w *worker) run() {
	s := w.s
	if !w.bound || w.batch[0].items > int64(s.batch) {
		r := w.batch[0]
		r.results, r.err = s.runUnbound(r.inputs, r.outputs)
		w.finish()
		return
	}
	if len(w.batch) == 1 {
		w.runAlone(w.batch[0])
		w.finish()
		return
	}
	var n int64
	for _, r := range w.batch {
		for i, b := range w.in {
			copyAt(b.data, n*b.item, r.inputs[i].data)
		}
		n += r.items
	}
	for i, b := range w.in {
		w.inArgs[i] = b.view(n)
	}
	for i, b := range w.out {
		w.outArgs[i] = b.view(n)
	}
	err := s.ort.Run(w.inArgs, w.outArgs)
	var off int64
	for _, r := range w.batch {
		switch {
		case err != nil:
			r.err = fmt.Errorf("%w: %s: %v", ErrRuntime, s.manifest.Name, err)
		case r.outputs != nil:
			for i, b := range w.out {
				copyAt(r.outputs[i].data, 0, sliceOf(b.data, off*b.item, r.items*b.item))
			}
		default:
			r.results = make([]Tensor, len(w.out))
			for i, b := range w.out {
				r.results[i] = Tensor{Shape: b.shapeOf(r.items), data: sliceOf(b.data, off*b.item, r.items*b.item)}.Clone()
			}
		}
		off += r.items
	}
	w.finish()
}

// runAlone runs one request with no copy: ONNX Runtime reads the caller's input tensors, and
// writes into the caller's output tensors (RunInto) or the worker's buffers (Run, which then
// copies them out for the caller to keep). Its views of the caller's tensors are kept for the
// next call, so a caller that reuses its tensors (the detector, the pose estimator) makes no
// new ones.
func (w *worker) runAlone(r *request) {
	s := w.s
	var err error
	for i, t := range r.inputs {
		if w.inArgs[i], err = w.views.of(t); err != nil {
			r.err = err
			return
		}
	}
	for i, b := range w.out {
		if r.outputs == nil {
			w.outArgs[i] = b.view(r.items)
		} else if w.outArgs[i], err = w.views.of(r.outputs[i]); err != nil {
			r.err = err
			return
		}
	}
	if err := s.ort.Run(w.inArgs, w.outArgs); err != nil {
		r.err = fmt.Errorf("%w: %s: %v", ErrRuntime, s.manifest.Name, err)
		return
	}
	if r.outputs == nil {
		r.results = make([]Tensor, len(w.out))
		for i, b := range w.out {
			r.results[i] = Tensor{Shape: b.shapeOf(r.items), data: sliceOf(b.data, 0, r.items*b.item)}.Clone()
		}
	}
}

// views are ONNX Runtime's views of the callers' tensors a worker has run, newest last. A view
// holds its tensor's memory, which Go never moves, so the memory lives as long as the view.
type views struct {
	list []tensorView
}

type tensorView struct {
	data  unsafe.Pointer
	n     int
	shape []int64
	keep  any // the Go slice: alive while the view is
	value ort.Value
}

// maxViews bounds the views a worker keeps (each holds a caller's tensor alive).
const maxViews = 8

// of is the view of t, made when t is new.
func (vs *views) of(t Tensor) (ort.Value, error) {
	data, n := dataPointer(t.data)
	for i := len(vs.list) - 1; i >= 0; i-- {
		v := vs.list[i]
		if v.data == data && v.n == n && slices.Equal(v.shape, t.Shape) {
			return v.value, nil
		}
	}
	value, err := toORT(t)
	if err != nil {
		return nil, err
	}
	track()
	if len(vs.list) == maxViews {
		vs.list[0].value.Destroy()
		untrack()
		vs.list = append(vs.list[:0], vs.list[1:]...)
	}
	vs.list = append(vs.list, tensorView{data: data, n: n, shape: slices.Clone(t.Shape), keep: t.data, value: value})
	return value, nil
}

func (vs *views) free() {
	for _, v := range vs.list {
		v.value.Destroy()
		untrack()
	}
	vs.list = nil
}

// dataPointer is where a tensor's elements start, and how many there are.
func dataPointer(data any) (unsafe.Pointer, int) {
	switch d := data.(type) {
	case []float32:
		return unsafe.Pointer(unsafe.SliceData(d)), len(d)
	case []int32:
		return unsafe.Pointer(unsafe.SliceData(d)), len(d)
	case []int64:
		return unsafe.Pointer(unsafe.SliceData(d)), len(d)
	case []uint8:
		return unsafe.Pointer(unsafe.SliceData(d)), len(d)
	}
	return nil, 0
}

// view is ONNX Runtime's view of the first n items.
func (b *buffer) view(n int64) ort.Value {
	return b.values[min(n, int64(len(b.values)))-1]
}

// shapeOf is the tensor's shape for n items.
func (b *buffer) shapeOf(n int64) []int64 {
	shape := append([]int64(nil), b.shape...)
	if shape[0] == models.Dynamic {
		shape[0] = n
	}
	return shape
}

// finish wakes the batch's callers; their requests are theirs again.
func (w *worker) finish() {
	for i, r := range w.batch {
		r.done <- struct{}{}
		w.batch[i] = nil
	}
	w.batch = w.batch[:0]
}

// runUnbound runs one request on tensors made for it: the path of models whose shapes vary
// beyond the batch dimension.
func (s *Session) runUnbound(inputs, outputs []Tensor) ([]Tensor, error) {
	in := make([]ort.Value, len(inputs))
	defer func() {
		for _, v := range in {
			if v != nil {
				v.Destroy()
				untrack()
			}
		}
	}()
	for i, t := range inputs {
		v, err := toORT(t)
		if err != nil {
			return nil, err
		}
		track()
		in[i] = v
	}
	out := make([]ort.Value, len(s.outputs))
	err := s.ort.Run(in, out)
	// The Go memory behind the input tensors must live until the run is over.
	runtime.KeepAlive(inputs)
	results := make([]Tensor, len(out))
	for i, v := range out {
		if v == nil {
			continue
		}
		t, cerr := fromORT(v)
		v.Destroy()
		if err == nil && cerr != nil {
			err = cerr
		}
		results[i] = t
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrRuntime, s.manifest.Name, err)
	}
	if outputs == nil {
		return results, nil
	}
	for i, t := range results {
		if !slices.Equal(t.Shape, outputs[i].Shape) || t.DType() != outputs[i].DType() {
			return nil, fmt.Errorf("%w: output %q is %s %v, got a tensor of %s %v to fill", ErrBadInput, s.outputs[i].Name, t.DType(), t.Shape, outputs[i].DType(), outputs[i].Shape)
		}
		copyAt(outputs[i].data, 0, t.data)
	}
	return nil, nil
}
