//go:build !cgo

// Package inference runs ONNX models through ONNX Runtime, which needs cgo. This file is the
// build without cgo: it compiles, and every entry point returns ErrNoCGO.
package inference

import (
	"context"
	"time"

	"github.com/vigil-health/vigil/models"
)

// Engine is unavailable without cgo.
type Engine struct{}

// Open returns ErrNoCGO: ONNX Runtime cannot be loaded without cgo.
func Open(Config) (*Engine, error) { return nil, ErrNoCGO }

func (e *Engine) Version() string                                 { return "" }
func (e *Engine) Library() string                                 { return "" }
func (e *Engine) Provider() string                                { return "" }
func (e *Engine) Load(*models.Manifest, string) (*Session, error) { return nil, ErrNoCGO }
func (e *Engine) Close() error                                    { return nil }
func (e *Engine) Signature(string) ([]models.TensorSpec, []models.TensorSpec, error) {
	return nil, nil, ErrNoCGO
}

// Session is unavailable without cgo.
type Session struct{}

func (s *Session) Manifest() *models.Manifest                      { return nil }
func (s *Session) Provider() string                                { return "" }
func (s *Session) Path() string                                    { return "" }
func (s *Session) Inputs() []models.TensorSpec                     { return nil }
func (s *Session) Outputs() []models.TensorSpec                    { return nil }
func (s *Session) Workers() int                                    { return 0 }
func (s *Session) Close() error                                    { return nil }
func (s *Session) Run(context.Context, []Tensor) ([]Tensor, error) { return nil, ErrNoCGO }

func (s *Session) RunInto(context.Context, []Tensor, []Tensor) error { return ErrNoCGO }
func (s *Session) Batching() (int, time.Duration)                    { return 0, 0 }
func (s *Session) Stats() (int64, int64)                             { return 0, 0 }

// Bare is unavailable without cgo.
type Bare struct{}

func (e *Engine) OpenBare(*models.Manifest, string, []Tensor) (*Bare, error) { return nil, ErrNoCGO }
func (b *Bare) Run() error                                                   { return ErrNoCGO }
func (b *Bare) Close() error                                                 { return nil }
