package bench

import (
	"context"

	"github.com/vigil-health/vigil/auth"
	"github.com/vigil-health/vigil/dicomio"
	"github.com/vigil-health/vigil/inference"
	"github.com/vigil-health/vigil/internal/loopback"
	"github.com/vigil-health/vigil/models"
	"github.com/vigil-health/vigil/server"
	"github.com/vigil-health/vigil/vision"
)

// unbatched is the triage model loaded a second time with batching off, so that one run can
// say what batching itself adds.
const (
	triageModel = "us-lesion-demo"
	unbatched   = "us-lesion-demo-unbatched"
)

// rig is a real Vigil server on a loopback port over the engine the in-process paths use:
// both sides of a comparison share the same sessions and workers.
type rig struct{ *loopback.Server }

func newRig(ctx context.Context, engine *inference.Engine, o Options) (*rig, error) {
	entries := append([]models.Entry(nil), o.Entries...)
	for _, e := range o.Entries {
		if e.Name == triageModel && e.Manifest != nil {
			m := *e.Manifest
			m.Name, m.Batching = unbatched, models.Batching{}
			entries = append(entries, models.Entry{Name: unbatched, Manifest: &m})
		}
	}
	s, err := loopback.Start(ctx, engine, loopback.Options{
		Entries: entries, Resolver: o.Resolver,
		Load:    []string{triageModel, unbatched, biometryModel, "fastestdet", "movenet-lightning"},
		Roles:   []auth.Role{auth.RolePACSWorker, auth.RoleWardBridge},
		Imaging: server.ImagingOptions{Model: triageModel, Decoders: dicomio.Decoders{JPEG2000: vision.DecodeJPEG2000}},
	})
	if err != nil {
		return nil, err
	}
	return &rig{s}, nil
}

func (r *rig) close() { r.Close() }
