package inference

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"

	"github.com/vigil-health/vigil/models"
)

// State says whether a model can serve.
type State string

const (
	StateReady   State = "ready"
	StateMissing State = "missing" // weights found nowhere
	StateInvalid State = "invalid" // manifest, weights or signature wrong, or no runtime
)

var (
	// ErrUnknownModel means no manifest has that name.
	ErrUnknownModel = errors.New("inference: unknown model")
	// ErrModelNotReady means the model exists but could not be loaded; the error says why.
	ErrModelNotReady = errors.New("inference: model not ready")
)

// ModelStatus is what the registry knows of one model.
type ModelStatus struct {
	// Routes are the manifest's routes, one line each (models.Route.String), and RouteRules
	// the same as data, for clients that choose what to send.
	Routes     []string
	RouteRules []models.Route
	Name       string
	Version    string
	Task       string
	State      State
	// Reason says why a model is missing or invalid.
	Reason string
	// Provider is where the model runs; RequestedProvider is what the config asked for.
	Provider          string
	RequestedProvider string
	SHA256            string
	WeightsPath       string
	Inputs            []models.TensorSpec
	Outputs           []models.TensorSpec
	Workers           int
	// MaxBatch is the most items one run takes (1: no batching); Batching says how, or why not.
	MaxBatch int
	Batching string
}

// Registry holds a session for every model that loaded and the status of every model, so that
// one bad model never stops the others from serving.
type Registry struct {
	mu       sync.RWMutex
	sessions map[string]*Session
	status   map[string]ModelStatus
}

// LoadRegistry resolves and loads every entry. engine may be nil when the runtime could not
// start, with runtimeErr saying why; every model is then invalid with that reason.
func LoadRegistry(ctx context.Context, engine *Engine, runtimeErr error, entries []models.Entry, resolver *models.Resolver) *Registry {
	r := &Registry{sessions: map[string]*Session{}, status: map[string]ModelStatus{}}
	for _, e := range entries {
		st := ModelStatus{Name: e.Name, State: StateInvalid}
		if engine != nil {
			st.RequestedProvider = engine.Provider()
		}
		if e.Err != nil {
			st.Reason = e.Err.Error()
			r.status[e.Name] = st
			continue
		}
		m := e.Manifest
		st.Version, st.Task, st.SHA256 = m.Version, string(m.Task), m.Weights.SHA256
		st.RouteRules = m.Routes
		for i := range m.Routes {
			st.Routes = append(st.Routes, m.Routes[i].String())
		}
		path, err := resolver.Resolve(ctx, m)
		switch {
		case errors.Is(err, models.ErrWeightsMissing):
			st.State, st.Reason = StateMissing, err.Error()
		case err != nil:
			st.Reason = err.Error()
		case engine == nil:
			st.WeightsPath = path
			st.Reason = fmt.Sprintf("ONNX Runtime is not available: %v", runtimeErr)
		default:
			st.WeightsPath = path
			s, err := engine.Load(m, path)
			if err != nil {
				st.Reason = err.Error()
				break
			}
			st.State, st.Provider, st.Workers = StateReady, s.Provider(), s.Workers()
			st.MaxBatch, st.Batching = batchingOf(s)
			st.Inputs, st.Outputs = s.Inputs(), s.Outputs()
			r.sessions[m.Name] = s
		}
		r.status[e.Name] = st
	}
	return r
}

// Session returns the loaded session of a model.
func (r *Registry) Session(name string) (*Session, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if s, ok := r.sessions[name]; ok {
		return s, nil
	}
	st, ok := r.status[name]
	if !ok {
		// The name is the caller's text: it is not repeated (it could be anything, of any size).
		return nil, fmt.Errorf("%w: no model by the name asked for (%d bytes) is loaded; ListModels names those that are", ErrUnknownModel, len(name))
	}
	return nil, fmt.Errorf("%w: %s is %s: %s", ErrModelNotReady, name, st.State, st.Reason)
}

// Manifests returns the manifests of the loaded models, sorted by name.
func (r *Registry) Manifests() []*models.Manifest {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]*models.Manifest, 0, len(r.sessions))
	for _, s := range r.sessions {
		out = append(out, s.Manifest())
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Status lists every model, sorted by name.
func (r *Registry) Status() []ModelStatus {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]ModelStatus, 0, len(r.status))
	for _, st := range r.status {
		out = append(out, st)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Close closes every session.
func (r *Registry) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	var errs []error
	for name, s := range r.sessions {
		errs = append(errs, s.Close())
		delete(r.sessions, name)
	}
	return errors.Join(errs...)
}

// batchingOf describes how a loaded model batches requests.
func batchingOf(s *Session) (int, string) {
	batch, delay := s.Batching()
	m := s.Manifest()
	switch {
	case batch > 1:
		return batch, fmt.Sprintf("dynamic, up to %d items a run, queue delay %v", batch, delay)
	case !m.BatchDynamic() && m.Batching.MaxBatch > 1:
		return 1, fmt.Sprintf("off: the batch dimension is fixed (the manifest asks for %d)", m.Batching.MaxBatch)
	case !m.BatchDynamic():
		return 1, "off: the batch dimension is fixed"
	}
	return 1, "off: the manifest sets no batching.max_batch"
}
