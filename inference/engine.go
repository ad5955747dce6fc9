//go:build cgo

// Package inference runs ONNX models through ONNX Runtime. It is the only package that imports
// onnxruntime_go: everything above it sees Tensor, plain Go slices and sentinel errors.
//
// Every native handle (environment, session options, provider options, sessions, tensors) is
// created and destroyed explicitly here, and counted: LiveHandles lets tests fail on a leak.
package inference

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	ort "github.com/yalue/onnxruntime_go"

	"github.com/vigil-health/vigil/models"
)

// The ONNX Runtime environment is process-wide: the first Open creates it, the last Close
// destroys it.
var (
	envMu   sync.Mutex
	envRefs int
	envLib  string
)

func acquireEnvironment(lib string) error {
	envMu.Lock()
	defer envMu.Unlock()
	if envRefs > 0 {
		envRefs++
		return nil
	}
	ort.SetSharedLibraryPath(lib)
	if err := ort.InitializeEnvironment(ort.WithLogLevelError()); err != nil {
		return fmt.Errorf("%w: loading %s: %v", ErrRuntime, lib, err)
	}
	track()
	envRefs, envLib = 1, lib
	return nil
}

func releaseEnvironment() error {
	envMu.Lock()
	defer envMu.Unlock()
	envRefs--
	if envRefs > 0 {
		return nil
	}
	untrack()
	if err := ort.DestroyEnvironment(); err != nil {
		return fmt.Errorf("%w: %v", ErrRuntime, err)
	}
	return nil
}

// Engine loads models into sessions on one execution provider.
type Engine struct {
	cfg     Config
	lib     string
	version string

	fallbackMu     sync.Mutex
	fallbackLogged map[string]bool

	mu       sync.Mutex
	sessions map[*Session]struct{}
	closed   bool
}

// Open initialises ONNX Runtime (once per process) for an engine with this config.
func Open(cfg Config) (*Engine, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	lib, err := FindLibrary(cfg.LibraryPath)
	if err != nil {
		return nil, err
	}
	if err := acquireEnvironment(lib); err != nil {
		return nil, err
	}
	return &Engine{
		cfg:            cfg,
		lib:            envLib,
		version:        ort.GetVersion(),
		fallbackLogged: map[string]bool{},
		sessions:       map[*Session]struct{}{},
	}, nil
}

// Version is the ONNX Runtime library's version.
func (e *Engine) Version() string { return e.version }

// Library is the path of the ONNX Runtime library in use.
func (e *Engine) Library() string { return e.lib }

// Provider is the execution provider the config asked for.
func (e *Engine) Provider() string { return e.cfg.Provider }

// Signature returns the inputs and outputs an ONNX file declares.
func (e *Engine) Signature(path string) (inputs, outputs []models.TensorSpec, err error) {
	ins, outs, err := ort.GetInputOutputInfo(path)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: reading %s: %v", ErrRuntime, path, err)
	}
	return specsOf(ins), specsOf(outs), nil
}

// Load checks the ONNX file against the manifest and opens a session for it. The error wraps
// models.ErrSignatureMismatch when the file's inputs or outputs disagree with the manifest.
func (e *Engine) Load(m *models.Manifest, path string) (*Session, error) {
	inputs, outputs, err := e.Signature(path)
	if err != nil {
		return nil, err
	}
	if err := m.CheckSignature(inputs, outputs); err != nil {
		return nil, err
	}
	e.mu.Lock()
	closed := e.closed
	e.mu.Unlock()
	if closed {
		return nil, ErrClosed
	}

	inNames := make([]string, len(m.Inputs))
	specs := make([]models.TensorSpec, len(m.Inputs))
	for i, in := range m.Inputs {
		inNames[i], specs[i] = in.Name, in.TensorSpec
	}
	outNames := make([]string, len(m.Outputs))
	for i, out := range m.Outputs {
		outNames[i] = out.Name
	}

	provider := e.cfg.Provider
	sess, err := e.newSession(path, inNames, outNames, provider)
	if err != nil && provider != "cpu" {
		e.logFallback(provider, err)
		provider = "cpu"
		sess, err = e.newSession(path, inNames, outNames, provider)
	}
	if err != nil {
		return nil, err
	}
	s := &Session{
		engine:   e,
		manifest: m,
		path:     path,
		provider: provider,
		inputs:   specs,
		outputs:  m.Outputs,
		ort:      sess,
	}
	if err := s.start(e.cfg.Workers, e.cfg.QueueDepth); err != nil {
		sess.Destroy()
		untrack()
		return nil, err
	}
	if m.Batching.MaxBatch > 1 && s.batch == 1 {
		e.cfg.Logger.Warn("model has a fixed batch dimension: requests run one at a time, not batched",
			slog.String("model", m.Name), slog.Int("max_batch", m.Batching.MaxBatch))
	}
	e.mu.Lock()
	e.sessions[s] = struct{}{}
	e.mu.Unlock()
	return s, nil
}

// newSession opens a session on one provider. It fails when the provider cannot be appended
// (a CPU-only build asked for CUDA) or the session cannot start on it (no driver, no GPU).
func (e *Engine) newSession(path string, in, out []string, provider string) (*ort.DynamicAdvancedSession, error) {
	opts, err := ort.NewSessionOptions()
	if err != nil {
		return nil, fmt.Errorf("%w: session options: %v", ErrRuntime, err)
	}
	track()
	defer func() { opts.Destroy(); untrack() }()
	if err := opts.SetIntraOpNumThreads(e.cfg.IntraOpThreads); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrRuntime, err)
	}
	if err := opts.SetInterOpNumThreads(1); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrRuntime, err)
	}
	switch provider {
	case "cuda":
		if err := e.appendCUDA(opts); err != nil {
			return nil, err
		}
	case "tensorrt":
		if err := e.appendTensorRT(opts); err != nil {
			return nil, err
		}
		// Operators TensorRT cannot take run on CUDA rather than on the CPU.
		if err := e.appendCUDA(opts); err != nil {
			return nil, err
		}
	}
	sess, err := ort.NewDynamicAdvancedSession(path, in, out, opts)
	if err != nil {
		return nil, fmt.Errorf("%w: opening %s on %s: %v", ErrRuntime, path, provider, err)
	}
	track()
	return sess, nil
}

// providerOptions are CUDA's and TensorRT's option handles.
type providerOptions interface {
	Update(map[string]string) error
	Destroy() error
}

// appendProvider creates a provider's options for the configured device, appends the
// provider to the session options and frees the options handle.
func appendProvider[T providerOptions](e *Engine, name string, create func() (T, error), add func(T) error) error {
	po, err := create()
	if err != nil {
		return fmt.Errorf("%s provider options: %v", name, err)
	}
	track()
	defer func() { po.Destroy(); untrack() }()
	if err := po.Update(map[string]string{"device_id": strconv.Itoa(e.cfg.DeviceID)}); err != nil {
		return fmt.Errorf("%s provider options: %v", name, err)
	}
	if err := add(po); err != nil {
		return fmt.Errorf("%s execution provider: %v", name, err)
	}
	return nil
}

func (e *Engine) appendCUDA(opts *ort.SessionOptions) error {
	return appendProvider(e, "CUDA", ort.NewCUDAProviderOptions, opts.AppendExecutionProviderCUDA)
}

func (e *Engine) appendTensorRT(opts *ort.SessionOptions) error {
	return appendProvider(e, "TensorRT", ort.NewTensorRTProviderOptions, opts.AppendExecutionProviderTensorRT)
}

// logFallback says once per engine and provider why the GPU provider is not used.
func (e *Engine) logFallback(provider string, reason error) {
	e.fallbackMu.Lock()
	defer e.fallbackMu.Unlock()
	if e.fallbackLogged[provider] {
		return
	}
	e.fallbackLogged[provider] = true
	e.cfg.Logger.Warn("execution provider unavailable, running on cpu",
		slog.String("provider", provider), slog.String("reason", reason.Error()))
}

// Close closes every session the engine opened and releases the runtime.
func (e *Engine) Close() error {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return nil
	}
	e.closed = true
	open := make([]*Session, 0, len(e.sessions))
	for s := range e.sessions {
		open = append(open, s)
	}
	e.mu.Unlock()
	var errs []error
	for _, s := range open {
		errs = append(errs, s.Close())
	}
	errs = append(errs, releaseEnvironment())
	return errors.Join(errs...)
}

// Session is one loaded model. Run may be called from many goroutines: requests queue for the
// session's workers (at most QueueDepth wait; the rest get ErrOverloaded), and a model whose
// batch dimension is dynamic runs queued requests together (see scheduler.go).
type Session struct {
	engine   *Engine
	manifest *models.Manifest
	path     string
	provider string
	inputs   []models.TensorSpec
	outputs  []models.TensorSpec

	ort *ort.DynamicAdvancedSession
	// qmu guards queue (waiting requests, oldest first, at most depth) and closed.
	qmu     sync.Mutex
	queue   []*request
	depth   int
	closed  atomic.Bool
	arrived chan struct{} // a request was queued: wakes a worker waiting to fill a batch
	workers []*worker
	slots   chan *worker // the workers not running
	// batch is the most items one run takes; maxDelay how long a partial batch waits.
	batch    int
	maxDelay time.Duration
	runs     atomic.Int64
	items    atomic.Int64
}

// Manifest is the manifest the session was loaded with.
func (s *Session) Manifest() *models.Manifest { return s.manifest }

// Provider is the execution provider the session actually runs on.
func (s *Session) Provider() string { return s.provider }

// Path is the weights file the session was loaded from.
func (s *Session) Path() string { return s.path }

// Inputs and Outputs are the tensors in the order Run takes and returns them.
func (s *Session) Inputs() []models.TensorSpec  { return s.inputs }
func (s *Session) Outputs() []models.TensorSpec { return s.outputs }

// Workers is how many runs may execute at once.
func (s *Session) Workers() int { return len(s.workers) }

// Batching is the most items one run takes (1: no batching) and how long a partial batch
// waits for more.
func (s *Session) Batching() (maxBatch int, maxQueueDelay time.Duration) { return s.batch, s.maxDelay }

// Stats are the runs the model has made and the items they carried; their ratio is the mean
// batch size.
func (s *Session) Stats() (runs, items int64) { return s.runs.Load(), s.items.Load() }

// Run feeds inputs (in manifest order) to the model and returns its outputs (in manifest
// order), in memory of their own. Input shapes may differ from the manifest's only in dynamic
// dimensions.
func (s *Session) Run(ctx context.Context, inputs []Tensor) ([]Tensor, error) {
	return s.submit(ctx, inputs, nil)
}

// RunInto is Run writing the outputs into the caller's tensors, which must have the shapes the
// outputs will have: a caller that keeps its tensors runs without allocating.
func (s *Session) RunInto(ctx context.Context, inputs, outputs []Tensor) error {
	if len(outputs) != len(s.outputs) {
		return fmt.Errorf("%w: %s gives %d outputs, got %d to fill", ErrBadInput, s.manifest.Name, len(s.outputs), len(outputs))
	}
	_, err := s.submit(ctx, inputs, outputs)
	return err
}

// Close waits for the runs under way, fails the requests still queued with ErrClosed and
// frees the session.
func (s *Session) Close() error {
	s.qmu.Lock()
	if s.closed.Load() {
		s.qmu.Unlock()
		return nil
	}
	s.closed.Store(true)
	s.qmu.Unlock()
	for range s.workers {
		<-s.slots
	}
	s.qmu.Lock()
	queued := s.queue
	s.queue = nil
	s.qmu.Unlock()
	for _, r := range queued {
		r.err = ErrClosed
		r.done <- struct{}{}
	}
	var errs []error
	for _, w := range s.workers {
		errs = append(errs, w.free())
	}
	if err := s.ort.Destroy(); err != nil {
		errs = append(errs, fmt.Errorf("%w: %v", ErrRuntime, err))
	}
	untrack()
	s.engine.mu.Lock()
	delete(s.engine.sessions, s)
	s.engine.mu.Unlock()
	return errors.Join(errs...)
}

func toORT(t Tensor) (ort.Value, error) {
	shape := ort.NewShape(t.Shape...)
	var (
		v   ort.Value
		err error
	)
	switch d := t.data.(type) {
	case []float32:
		v, err = ort.NewTensor(shape, d)
	case []int32:
		v, err = ort.NewTensor(shape, d)
	case []int64:
		v, err = ort.NewTensor(shape, d)
	case []uint8:
		v, err = ort.NewTensor(shape, d)
	default:
		return nil, fmt.Errorf("%w: tensor with no data", ErrBadInput)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrRuntime, err)
	}
	return v, nil
}

func fromORT(v ort.Value) (Tensor, error) {
	shape := []int64(v.GetShape().Clone())
	switch t := v.(type) {
	case *ort.Tensor[float32]:
		return Tensor{Shape: shape, data: t.GetData()}, nil
	case *ort.Tensor[int32]:
		return Tensor{Shape: shape, data: t.GetData()}, nil
	case *ort.Tensor[int64]:
		return Tensor{Shape: shape, data: t.GetData()}, nil
	case *ort.Tensor[uint8]:
		return Tensor{Shape: shape, data: t.GetData()}, nil
	}
	return Tensor{}, fmt.Errorf("%w: output of unsupported type %T", ErrRuntime, v)
}

func specsOf(infos []ort.InputOutputInfo) []models.TensorSpec {
	out := make([]models.TensorSpec, len(infos))
	for i, info := range infos {
		out[i] = models.TensorSpec{Name: info.Name, DType: dtypeOf(info.DataType), Shape: []int64(info.Dimensions.Clone())}
	}
	return out
}

func dtypeOf(t ort.TensorElementDataType) models.DType {
	switch t {
	case ort.TensorElementDataTypeFloat:
		return models.Float32
	case ort.TensorElementDataTypeFloat16:
		return models.Float16
	case ort.TensorElementDataTypeDouble:
		return models.Float64
	case ort.TensorElementDataTypeInt8:
		return models.Int8
	case ort.TensorElementDataTypeUint8:
		return models.Uint8
	case ort.TensorElementDataTypeInt32:
		return models.Int32
	case ort.TensorElementDataTypeInt64:
		return models.Int64
	case ort.TensorElementDataTypeBool:
		return models.Bool
	}
	return models.DType(t.String())
}
