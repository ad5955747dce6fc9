package inference

import "errors"

var (
	// ErrNoCGO is returned by every entry point of a binary built with CGO_ENABLED=0: ONNX
	// Runtime is a C library and cannot be reached without cgo.
	ErrNoCGO = errors.New("inference: this binary was built without cgo (CGO_ENABLED=0), so ONNX Runtime is unavailable; rebuild with CGO_ENABLED=1")
	// ErrLibraryMissing means the ONNX Runtime shared library was not found.
	ErrLibraryMissing = errors.New("inference: ONNX Runtime library not found")
	// ErrBadInput means the tensors given to Run do not fit the model.
	ErrBadInput = errors.New("inference: bad input")
	// ErrOverloaded means a model's queue of waiting runs is full; the caller should retry later.
	ErrOverloaded = errors.New("inference: model is overloaded")
	// ErrClosed means the session or engine was closed.
	ErrClosed = errors.New("inference: closed")
	// ErrRuntime wraps a failure inside ONNX Runtime itself.
	ErrRuntime = errors.New("inference: runtime error")
)
