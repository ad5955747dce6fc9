package server

import (
	"context"
	"log/slog"

	"github.com/vigil-health/vigil/auth"
	"github.com/vigil-health/vigil/inference"
	"github.com/vigil-health/vigil/models"
	vigilv1 "github.com/vigil-health/vigil/proto/vigil/v1"
)

// modelsService answers what the model repository holds and where each model runs.
type modelsService struct {
	vigilv1.UnimplementedModelsServer
	log      *slog.Logger
	registry *inference.Registry
	runtime  string
}

func (s *modelsService) ListModels(ctx context.Context, _ *vigilv1.ListModelsRequest) (*vigilv1.ListModelsResponse, error) {
	resp := &vigilv1.ListModelsResponse{RuntimeVersion: s.runtime}
	// Where the weights sit on the server's disk is for the people who run it.
	p, _ := auth.PrincipalFrom(ctx)
	admin := p.Role == auth.RoleAdmin
	for _, st := range s.registry.Status() {
		if !admin {
			st.WeightsPath = ""
		}
		resp.Models = append(resp.Models, &vigilv1.ModelInfo{
			Name:              st.Name,
			Version:           st.Version,
			Task:              st.Task,
			State:             modelState(st.State),
			Reason:            st.Reason,
			Provider:          st.Provider,
			RequestedProvider: st.RequestedProvider,
			Sha256:            st.SHA256,
			WeightsPath:       st.WeightsPath,
			Inputs:            tensorSpecs(st.Inputs),
			Outputs:           tensorSpecs(st.Outputs),
			Workers:           int32(st.Workers),
			MaxBatch:          int32(st.MaxBatch),
			Batching:          st.Batching,
			Routes:            st.Routes,
			RouteRules:        routeRules(st.RouteRules),
		})
	}
	return resp, nil
}

func modelState(s inference.State) vigilv1.ModelState {
	switch s {
	case inference.StateReady:
		return vigilv1.ModelState_MODEL_STATE_READY
	case inference.StateMissing:
		return vigilv1.ModelState_MODEL_STATE_MISSING
	case inference.StateInvalid:
		return vigilv1.ModelState_MODEL_STATE_INVALID
	}
	return vigilv1.ModelState_MODEL_STATE_UNSPECIFIED
}

func tensorSpecs(specs []models.TensorSpec) []*vigilv1.TensorSpec {
	out := make([]*vigilv1.TensorSpec, len(specs))
	for i, s := range specs {
		out[i] = &vigilv1.TensorSpec{Name: s.Name, Dtype: string(s.DType), Shape: s.Shape}
	}
	return out
}

func routeRules(routes []models.Route) []*vigilv1.Route {
	var out []*vigilv1.Route
	for _, r := range routes {
		out = append(out, &vigilv1.Route{Modality: r.Modality, SopClass: r.SOPClass, BodyPart: r.BodyPart, Description: r.Description})
	}
	return out
}
