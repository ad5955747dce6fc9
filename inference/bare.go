//go:build cgo

package inference

import (
	"fmt"

	ort "github.com/yalue/onnxruntime_go"

	"github.com/vigil-health/vigil/models"
)

// Bare is a model opened straight on ONNX Runtime with the engine's provider and threads, and
// none of Session's queue, workers or buffers: the baseline `vigil bench` measures Session
// against. It runs one call at a time, on tensors made once.
type Bare struct {
	sess    *ort.DynamicAdvancedSession
	in, out []ort.Value
}

// OpenBare opens the model for inputs fixed at these tensors (their memory is used as is, so
// they must live until Close). Outputs must have fixed shapes but for a
// dynamic batch dimension, which takes the inputs'.
func (e *Engine) OpenBare(m *models.Manifest, path string, inputs []Tensor) (*Bare, error) {
	if len(inputs) != len(m.Inputs) {
		return nil, fmt.Errorf("%w: %s takes %d inputs, got %d", ErrBadInput, m.Name, len(m.Inputs), len(inputs))
	}
	b := &Bare{}
	var inNames, outNames []string
	for i, in := range m.Inputs {
		inNames = append(inNames, in.Name)
		v, err := toORT(inputs[i])
		if err != nil {
			b.Close()
			return nil, err
		}
		track()
		b.in = append(b.in, v)
	}
	for _, out := range m.Outputs {
		outNames = append(outNames, out.Name)
		shape := append([]int64(nil), out.Shape...)
		if len(shape) > 0 && shape[0] == models.Dynamic && len(inputs[0].Shape) > 0 {
			shape[0] = inputs[0].Shape[0] // the batch the inputs carry
		}
		t, err := Zeros(models.TensorSpec{Name: out.Name, DType: out.DType, Shape: shape})
		if err != nil {
			b.Close()
			return nil, err
		}
		v, err := toORT(t)
		if err != nil {
			b.Close()
			return nil, err
		}
		track()
		b.out = append(b.out, v)
	}
	sess, err := e.newSession(path, inNames, outNames, e.cfg.Provider)
	if err != nil {
		b.Close()
		return nil, err
	}
	b.sess = sess
	return b, nil
}

// Run runs the model once.
func (b *Bare) Run() error {
	if err := b.sess.Run(b.in, b.out); err != nil {
		return fmt.Errorf("%w: %v", ErrRuntime, err)
	}
	return nil
}

// Close frees the session and its tensors.
func (b *Bare) Close() error {
	if b.sess != nil {
		b.sess.Destroy()
		untrack()
		b.sess = nil
	}
	for _, v := range append(b.in, b.out...) {
		v.Destroy()
		untrack()
	}
	b.in, b.out = nil, nil
	return nil
}
