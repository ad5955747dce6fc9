package eval

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"

	"github.com/vigil-health/vigil/auth"
	"github.com/vigil-health/vigil/inference"
	"github.com/vigil-health/vigil/internal/hc18"
	"github.com/vigil-health/vigil/internal/loopback"
	"github.com/vigil-health/vigil/models"
	"github.com/vigil-health/vigil/pipelines/biometry"
	"github.com/vigil-health/vigil/pipelines/geom"
	vigilv1 "github.com/vigil-health/vigil/proto/vigil/v1"
)

// BiometryOptions configure a biometry evaluation.
type BiometryOptions struct {
	Engine   inference.Config
	Entries  []models.Entry
	Resolver *models.Resolver
	Images   []hc18.Image
	// Limit, when above 0, takes only the first Limit images.
	Limit    int
	Progress func(string)
}

// BiometryReport is the HC error through the whole gRPC path: over every image, and for each
// folder apart when the images come from more than one.
type BiometryReport struct {
	BiometrySummary
	Folders []FolderSummary  `json:"folders,omitempty"`
	Images  []BiometryResult `json:"images"`
}

// FolderSummary is the summary of one folder's images.
type FolderSummary struct {
	Folder string `json:"folder"`
	BiometrySummary
}

// BiometrySummary sums up a set of images.
type BiometrySummary struct {
	Count int `json:"count"`
	// Measured images got an HC; Flagged of them carry the low-quality flag, FlaggedShare is
	// Flagged over Measured.
	Measured     int     `json:"measured"`
	Flagged      int     `json:"flagged"`
	FlaggedShare float64 `json:"flagged_share"`
	// NotMeasured counts the images without HC, by reason.
	NotMeasured map[string]int `json:"not_measured"`
	// All is the absolute HC error over every measured image; Trusted over those not flagged.
	All     ErrorStats `json:"hc_abs_error_mm_all"`
	Trusted ErrorStats `json:"hc_abs_error_mm_not_flagged"`
	// RelativeMean is the mean of |HC error| / the sonographer's HC over every measured image.
	RelativeMean float64 `json:"relative_error_mean"`
	// Within5 is the share of measured images within 5 mm of the sonographer.
	Within5 float64 `json:"within_5mm"`
	// SilentOver10 counts images with an error over 10 mm that carry no low-quality flag:
	// the failure that must not happen.
	SilentOver10 int `json:"silent_over_10mm"`
}

// ErrorStats summarises absolute errors in mm.
type ErrorStats struct {
	N      int     `json:"n"`
	Mean   float64 `json:"mean"`
	Median float64 `json:"median"`
	P90    float64 `json:"p90"`
	Worst  float64 `json:"worst"`
}

// BiometryResult is one image's outcome.
type BiometryResult struct {
	Folder     string  `json:"folder"`
	File       string  `json:"file"`
	TruthHC    float64 `json:"truth_hc_mm"`
	HC         float64 `json:"hc_mm,omitempty"`
	Error      float64 `json:"abs_error_mm,omitempty"`
	LowQuality bool    `json:"low_quality,omitempty"`
	Quality    string  `json:"quality,omitempty"`
	// Why is the reason there is no HC, or the low-quality flag's reasons.
	Why string `json:"why,omitempty"`
}

// Biometry sends every image, wrapped as calibrated DICOM, through AnalyzeInstance on a
// loopback server without naming a model (the routes choose), and compares HC with the
// sonographer's.
func Biometry(ctx context.Context, o BiometryOptions) (*BiometryReport, error) {
	progress := o.Progress
	if progress == nil {
		progress = func(string) {}
	}
	engine, err := inference.Open(o.Engine)
	if err != nil {
		return nil, err
	}
	defer engine.Close()
	srv, err := loopback.Start(ctx, engine, loopback.Options{Entries: o.Entries, Resolver: o.Resolver,
		Load: []string{"fetal-head"}, Roles: []auth.Role{auth.RolePACSWorker}})
	if err != nil {
		return nil, err
	}
	defer srv.Close()
	client := vigilv1.NewImagingClient(srv.Conn)
	images := o.Images
	if o.Limit > 0 && o.Limit < len(images) {
		images = images[:o.Limit]
	}
	r := &BiometryReport{}
	for i, im := range images {
		data, err := im.FetalHeadDICOM(false)
		if err != nil {
			return nil, err
		}
		resp, err := Analyze(srv.As(ctx, auth.RolePACSWorker), client, data, "")
		if err != nil {
			return nil, fmt.Errorf("%s: %w", im.File, err)
		}
		res := BiometryResult{Folder: im.Folder, File: im.File, TruthHC: im.HC}
		hc, low, why, quality := HeadCircumference(resp)
		if hc == 0 {
			res.Why = why
		} else {
			res.HC, res.LowQuality, res.Quality = hc, low, quality
			res.Error = geom.Round(math.Abs(hc-im.HC), 2)
			if low {
				res.Why = why
			}
		}
		r.Images = append(r.Images, res)
		if (i+1)%20 == 0 {
			progress(fmt.Sprintf("%d of %d images", i+1, len(images)))
		}
	}
	r.BiometrySummary = summarise(r.Images)
	var folders []string
	for _, im := range r.Images {
		if !slices.Contains(folders, im.Folder) {
			folders = append(folders, im.Folder)
		}
	}
	if len(folders) > 1 {
		for _, f := range folders {
			of := slices.DeleteFunc(slices.Clone(r.Images), func(im BiometryResult) bool { return im.Folder != f })
			r.Folders = append(r.Folders, FolderSummary{Folder: f, BiometrySummary: summarise(of)})
		}
	}
	return r, nil
}

// Analyze sends one DICOM file down AnalyzeInstance in 1 MiB chunks.
func Analyze(ctx context.Context, client vigilv1.ImagingClient, data []byte, model string) (*vigilv1.AnalyzeInstanceResponse, error) {
	stream, err := client.AnalyzeInstance(ctx)
	if err != nil {
		return nil, err
	}
	const chunk = 1 << 20
	for off := 0; off < len(data); off += chunk {
		req := &vigilv1.AnalyzeInstanceRequest{Chunk: data[off:min(off+chunk, len(data))]}
		if off == 0 {
			req.Options = &vigilv1.AnalyzeOptions{Model: model}
		}
		if err := stream.Send(req); err != nil && !errors.Is(err, io.EOF) {
			return nil, err
		}
	}
	return stream.CloseAndRecv()
}

// HeadCircumference reads HC from a response: its value in mm, its low-quality flag, why
// there is none or why it is flagged, and its quality figures.
func HeadCircumference(resp *vigilv1.AnalyzeInstanceResponse) (hc float64, low bool, why, quality string) {
	for _, f := range resp.Findings {
		if f.Label != biometry.Label {
			continue
		}
		var flags []string
		for _, e := range f.Evidence {
			if r, ok := strings.CutPrefix(e, "low quality: "); ok {
				flags = append(flags, r)
			}
		}
		for _, m := range f.Measurements {
			if m.Name == biometry.NameHC && m.Unit == "mm" {
				return m.Value, m.LowQuality, strings.Join(flags, "; "), m.Quality
			}
		}
		return 0, false, strings.Join(resp.Notes, "; "), ""
	}
	if len(resp.Notes) > 0 {
		return 0, false, strings.Join(resp.Notes, "; "), ""
	}
	if resp.GetModel().GetName() == "" {
		return 0, false, "not routed: " + resp.Routing, ""
	}
	return 0, false, "no fetal head finding", ""
}

func summarise(images []BiometryResult) BiometrySummary {
	var all, trusted []float64
	within, relative := 0, 0.0
	r := BiometrySummary{Count: len(images), NotMeasured: map[string]int{}}
	for _, im := range images {
		if im.HC == 0 {
			r.NotMeasured[im.Why]++
			continue
		}
		r.Measured++
		all = append(all, im.Error)
		relative += im.Error / im.TruthHC
		if im.Error <= 5 {
			within++
		}
		if im.LowQuality {
			r.Flagged++
			continue
		}
		trusted = append(trusted, im.Error)
		if im.Error > 10 {
			r.SilentOver10++
		}
	}
	r.All, r.Trusted = stats(all), stats(trusted)
	if r.Measured > 0 {
		r.Within5 = geom.Round(float64(within)/float64(r.Measured), 3)
		r.FlaggedShare = geom.Round(float64(r.Flagged)/float64(r.Measured), 3)
		r.RelativeMean = geom.Round(relative/float64(r.Measured), 4)
	}
	return r
}

func stats(v []float64) ErrorStats {
	if len(v) == 0 {
		return ErrorStats{}
	}
	s := slices.Clone(v)
	slices.Sort(s)
	sum := 0.0
	for _, x := range s {
		sum += x
	}
	at := func(q float64) float64 { // nearest rank
		return s[min(len(s)-1, int(math.Ceil(q*float64(len(s))))-1)]
	}
	r2 := func(x float64) float64 { return geom.Round(x, 2) }
	return ErrorStats{N: len(s), Mean: r2(sum / float64(len(s))), Median: r2(at(0.5)), P90: r2(at(0.9)), Worst: r2(s[len(s)-1])}
}

// WriteTable prints the report for people: each folder, then every image together.
func (r *BiometryReport) WriteTable(w io.Writer) {
	for _, f := range r.Folders {
		fmt.Fprintf(w, "%s:\n", f.Folder)
		f.writeTable(w, "  ")
	}
	if len(r.Folders) > 0 {
		fmt.Fprintln(w, "together:")
	}
	r.writeTable(w, "  ")
	worst := slices.Clone(r.Images)
	slices.SortFunc(worst, func(a, b BiometryResult) int { return -cmpFloat(a.Error, b.Error) })
	fmt.Fprintln(w, "largest errors:")
	for _, im := range worst[:min(5, len(worst))] {
		flag := ""
		if im.LowQuality {
			flag = " [low quality: " + im.Why + "]"
		}
		fmt.Fprintf(w, "  %s: HC %.1f mm, sonographer %.1f mm, error %.1f mm%s\n", im.File, im.HC, im.TruthHC, im.Error, flag)
	}
}

func (s *BiometrySummary) writeTable(w io.Writer, indent string) {
	fmt.Fprintf(w, "%simages %d, measured %d (%d flagged low quality, %.1f%%), not measured %d\n", indent, s.Count, s.Measured, s.Flagged, 100*s.FlaggedShare, s.Count-s.Measured)
	for why, n := range s.NotMeasured {
		fmt.Fprintf(w, "%s  not measured x%d: %s\n", indent, n, why)
	}
	row := func(name string, e ErrorStats) {
		fmt.Fprintf(w, "%sHC abs error, %-22s n=%-4d mean %.2f mm  median %.2f  p90 %.2f  worst %.2f\n", indent, name+":", e.N, e.Mean, e.Median, e.P90, e.Worst)
	}
	row("every measured image", s.All)
	row("not flagged", s.Trusted)
	fmt.Fprintf(w, "%smean relative error %.2f%%; within 5 mm: %.1f%% of measured; over 10 mm without a low-quality flag: %d\n", indent, 100*s.RelativeMean, 100*s.Within5, s.SilentOver10)
}

func cmpFloat(a, b float64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
