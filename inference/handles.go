package inference

import "sync/atomic"

// liveHandles counts native ONNX Runtime objects not yet destroyed.
var liveHandles atomic.Int64

func track()   { liveHandles.Add(1) }
func untrack() { liveHandles.Add(-1) }

// LiveHandles is the number of native handles (environment, sessions, options, tensors) that
// have been created and not destroyed. After every engine is closed it must be zero; tests
// check it.
func LiveHandles() int64 { return liveHandles.Load() }
