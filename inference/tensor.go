package inference

import (
	"fmt"

	"github.com/vigil-health/vigil/models"
)

// Element is a Go type a tensor can hold.
type Element interface {
	~float32 | ~int32 | ~int64 | ~uint8
}

// Tensor is a dense, row-major array with a shape: plain Go memory, so callers never touch
// ONNX Runtime's values.
type Tensor struct {
	Shape []int64
	data  any // []float32, []int32, []int64 or []uint8
}

// NewTensor wraps data (not copied) with a shape whose element count must equal len(data).
func NewTensor[T Element](shape []int64, data []T) (Tensor, error) {
	n, err := elements(shape)
	if err != nil {
		return Tensor{}, err
	}
	if n != int64(len(data)) {
		return Tensor{}, fmt.Errorf("%w: shape %v holds %d elements, data has %d", ErrBadInput, shape, n, len(data))
	}
	return Tensor{Shape: append([]int64(nil), shape...), data: data}, nil
}

// Clone is a copy of the tensor with its own data.
func (t Tensor) Clone() Tensor {
	c := Tensor{Shape: append([]int64(nil), t.Shape...)}
	switch v := t.data.(type) {
	case []float32:
		c.data = append([]float32(nil), v...)
	case []int32:
		c.data = append([]int32(nil), v...)
	case []int64:
		c.data = append([]int64(nil), v...)
	case []uint8:
		c.data = append([]uint8(nil), v...)
	}
	return c
}

// Values returns the tensor's data when it holds T.
func Values[T Element](t Tensor) ([]T, error) {
	v, ok := t.data.([]T)
	if !ok {
		var zero T
		return nil, fmt.Errorf("tensor holds %s, not %T", t.DType(), zero)
	}
	return v, nil
}

// DType names the tensor's element type as manifests spell it.
func (t Tensor) DType() models.DType {
	switch t.data.(type) {
	case []float32:
		return models.Float32
	case []int32:
		return models.Int32
	case []int64:
		return models.Int64
	case []uint8:
		return models.Uint8
	}
	return ""
}

func elements(shape []int64) (int64, error) {
	if len(shape) == 0 {
		return 0, fmt.Errorf("%w: empty shape", ErrBadInput)
	}
	n := int64(1)
	for _, d := range shape {
		if d <= 0 {
			return 0, fmt.Errorf("%w: shape %v has a dimension that is not positive", ErrBadInput, shape)
		}
		if n > (1<<40)/d {
			return 0, fmt.Errorf("%w: shape %v is too large", ErrBadInput, shape)
		}
		n *= d
	}
	return n, nil
}

// checkInput says whether t can feed spec: same element type, same rank, and every fixed
// dimension equal.
func checkInput(spec models.TensorSpec, t Tensor) error {
	if t.DType() != spec.DType {
		return fmt.Errorf("%w: input %q wants %s, got %s", ErrBadInput, spec.Name, spec.DType, t.DType())
	}
	if len(t.Shape) != len(spec.Shape) {
		return fmt.Errorf("%w: input %q wants shape %v, got %v", ErrBadInput, spec.Name, spec.Shape, t.Shape)
	}
	for i, d := range spec.Shape {
		if d != models.Dynamic && d != t.Shape[i] {
			return fmt.Errorf("%w: input %q wants shape %v, got %v", ErrBadInput, spec.Name, spec.Shape, t.Shape)
		}
	}
	return nil
}

// Zeros is a tensor of zeros with a spec's fixed shape and type: room for an output that
// RunInto fills.
func Zeros(spec models.TensorSpec) (Tensor, error) {
	n := elementsOf(spec.Shape)
	data, ok := newData(spec.DType, max(n, 0))
	if !ok || n <= 0 {
		return Tensor{}, fmt.Errorf("%w: tensor %s is not a fixed shape of a supported type", ErrBadInput, spec)
	}
	return Tensor{Shape: append([]int64(nil), spec.Shape...), data: data}, nil
}

// elementsOf is a fixed shape's element count, or -1 when a dimension is dynamic.
func elementsOf(shape []int64) int64 {
	n := int64(1)
	for _, d := range shape {
		if d <= 0 {
			return -1
		}
		n *= d
	}
	return n
}

// newData makes n zero elements of a type a Tensor can hold.
func newData(dtype models.DType, n int64) (any, bool) {
	switch dtype {
	case models.Float32:
		return make([]float32, n), true
	case models.Int32:
		return make([]int32, n), true
	case models.Int64:
		return make([]int64, n), true
	case models.Uint8:
		return make([]uint8, n), true
	}
	return nil, false
}

// sliceOf is elements [from, from+n) of data, sharing its memory.
func sliceOf(data any, from, n int64) any {
	switch d := data.(type) {
	case []float32:
		return d[from : from+n]
	case []int32:
		return d[from : from+n]
	case []int64:
		return d[from : from+n]
	case []uint8:
		return d[from : from+n]
	}
	return nil
}

// copyAt copies src's elements into dst from element off; both hold the same type, which
// checkInput and checkOutput have made sure of.
func copyAt(dst any, off int64, src any) {
	switch d := dst.(type) {
	case []float32:
		copy(d[off:], src.([]float32))
	case []int32:
		copy(d[off:], src.([]int32))
	case []int64:
		copy(d[off:], src.([]int64))
	case []uint8:
		copy(d[off:], src.([]uint8))
	}
}
