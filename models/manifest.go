// Package models is Vigil's model repository: one folder per model with a manifest that says
// what the model expects and produces, and a resolver that finds the weights by sha256.
//
// The package is pure Go. Loading a model into ONNX Runtime is inference's job; this package
// says what a correct model looks like so that inference can refuse one that is not.
package models

import (
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// ManifestFile is the name of the manifest inside a model's folder.
const ManifestFile = "manifest.yaml"

// Task is what a model is for.
type Task string

const (
	TaskTriage    Task = "triage"    // ultrasound findings
	TaskDetection Task = "detection" // people in ward frames
	TaskPose      Task = "pose"      // body keypoints
	TaskBiometry  Task = "biometry"  // measured structures, such as the fetal head
)

// Decoder names how a model's raw output becomes results.
type Decoder string

const (
	DecoderClassification Decoder = "classification"
	DecoderSegmentation   Decoder = "segmentation"
	DecoderDetection      Decoder = "detection"
	DecoderKeypoints      Decoder = "keypoints"
)

// DType is a tensor element type, spelled as in numpy.
type DType string

const (
	Float32 DType = "float32"
	Float16 DType = "float16"
	Float64 DType = "float64"
	Int8    DType = "int8"
	Uint8   DType = "uint8"
	Int32   DType = "int32"
	Int64   DType = "int64"
	Bool    DType = "bool"
)

// Dynamic marks a dimension whose size is chosen at run time.
const Dynamic = -1

// Manifest describes one model: where its weights are and how to feed and read it.
type Manifest struct {
	Name        string `yaml:"name"`
	Version     string `yaml:"version"`
	Task        Task   `yaml:"task"`
	Description string `yaml:"description"`
	License     string `yaml:"license"`
	Source      string `yaml:"source"`

	Weights Weights `yaml:"weights"`
	// Optional says the server does without the model: `vigil models resolve` reports it
	// missing without failing. FastestDet is: it has no registry source, and without it the
	// ward runs its fallback detector.
	Optional bool `yaml:"optional,omitempty"`
	// Build, when set, says how to make the weights from a package registry when no cache
	// or mirror holds them.
	Build   *Build        `yaml:"build,omitempty"`
	Inputs  []InputSpec   `yaml:"inputs"`
	Outputs []TensorSpec  `yaml:"outputs"`
	Decoder DecoderConfig `yaml:"decoder"`
	Labels  []string      `yaml:"labels"`
	// Thresholds are the decoder's cut-offs by name ("score", "nms_iou", "keypoint").
	Thresholds map[string]float64 `yaml:"thresholds"`
	// Batching lets one run serve several callers' requests. It applies only when the first
	// dimension of every input and output is dynamic.
	Batching Batching `yaml:"batching,omitempty"`
	// Routes say which DICOM instances the model runs on when a request names no model.
	Routes []Route `yaml:"routes,omitempty"`

	// Dir is the folder the manifest was read from; empty for embedded manifests.
	Dir string `yaml:"-"`
	// Embedded holds weights built into the binary (the project's own models only).
	Embedded []byte `yaml:"-"`
}

// Weights names the ONNX file and the checksum that identifies it.
type Weights struct {
	File   string `yaml:"file"`
	SHA256 string `yaml:"sha256"`
	Size   int64  `yaml:"size"`
}

// TensorSpec is one input or output tensor: name, element type and shape (Dynamic for a
// dimension chosen at run time).
type TensorSpec struct {
	Name  string  `yaml:"name"`
	DType DType   `yaml:"dtype"`
	Shape []int64 `yaml:"shape"`
}

func (s TensorSpec) String() string {
	dims := make([]string, len(s.Shape))
	for i, d := range s.Shape {
		if d < 0 {
			dims[i] = "?"
		} else {
			dims[i] = fmt.Sprint(d)
		}
	}
	return fmt.Sprintf("%q %s [%s]", s.Name, s.DType, strings.Join(dims, ","))
}

// InputSpec is an input tensor and how an image becomes that tensor.
type InputSpec struct {
	TensorSpec `yaml:",inline"`
	// Layout is "NCHW" or "NHWC".
	Layout string `yaml:"layout"`
	// Color is the channel order the model was trained on: "RGB", "BGR" or "GRAY".
	Color string `yaml:"color"`
	// Scale multiplies each 0..255 pixel value after Mean is subtracted; 1/255 maps to 0..1.
	Scale float64 `yaml:"scale"`
	// Mean is subtracted per channel (in Color order) before scaling.
	Mean []float64 `yaml:"mean"`
	// Resize is "stretch" (default) or "letterbox".
	Resize string `yaml:"resize"`
}

// Size returns the input's height and width from its shape and layout.
func (in InputSpec) Size() (height, width int64) {
	if len(in.Shape) != 4 {
		return 0, 0
	}
	if in.Layout == "NHWC" {
		return in.Shape[1], in.Shape[2]
	}
	return in.Shape[2], in.Shape[3]
}

// Batching is dynamic batching: requests that queue while the model's workers are busy run
// together, up to MaxBatch items in one run.
type Batching struct {
	// MaxBatch is the most items one run takes; 0 or 1 means no batching.
	MaxBatch int `yaml:"max_batch"`
	// MaxQueueDelay is how long a worker holding a partial batch waits for more requests
	// before it runs. 0 runs at once with whatever has queued, adding no latency when idle.
	MaxQueueDelay time.Duration `yaml:"max_queue_delay"`
}

// BatchDynamic says whether the first dimension of every input and output is dynamic, which
// is what dynamic batching needs.
func (m *Manifest) BatchDynamic() bool {
	specs := append([]TensorSpec(nil), m.Outputs...)
	for _, in := range m.Inputs {
		specs = append(specs, in.TensorSpec)
	}
	for _, s := range specs {
		if len(s.Shape) == 0 || s.Shape[0] != Dynamic {
			return false
		}
	}
	return true
}

// DecoderConfig selects the output decoder and its format.
type DecoderConfig struct {
	Kind Decoder `yaml:"kind"`
	// Format is the decoder's variant for its kind, such as "fastestdet" for detection or
	// "movenet" for keypoints.
	Format string `yaml:"format"`
}

// MaxBatch bounds batching.max_batch: a batch that large already gains nothing on a CPU.
const MaxBatch = 64

// ErrInvalidManifest is wrapped by every manifest validation error.
var ErrInvalidManifest = errors.New("invalid model manifest")

var (
	validName   = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,63}$`)
	validSHA256 = regexp.MustCompile(`^[0-9a-f]{64}$`)
	knownDTypes = []DType{Float32, Float16, Float64, Int8, Uint8, Int32, Int64, Bool}
	knownKinds  = []Decoder{DecoderClassification, DecoderSegmentation, DecoderDetection, DecoderKeypoints}
)

// ParseManifest reads a manifest and validates it.
func ParseManifest(data []byte) (*Manifest, error) {
	var m Manifest
	dec := yaml.NewDecoder(strings.NewReader(string(data)))
	dec.KnownFields(true)
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidManifest, err)
	}
	if err := m.Validate(); err != nil {
		return nil, err
	}
	return &m, nil
}

// Validate reports the first thing wrong with the manifest, naming the field.
func (m *Manifest) Validate() error {
	bad := func(format string, args ...any) error {
		name := m.Name
		if name == "" {
			name = "(unnamed)"
		}
		return fmt.Errorf("%w %s: %s", ErrInvalidManifest, name, fmt.Sprintf(format, args...))
	}
	switch {
	case !validName.MatchString(m.Name):
		return bad("name %q must be lower case letters, digits, '.', '_' or '-'", m.Name)
	case m.Version == "":
		return bad("version is empty")
	case m.Task == "":
		return bad("task is empty")
	case m.Weights.File == "" || strings.ContainsAny(m.Weights.File, `/\`):
		return bad("weights.file %q must be a plain file name", m.Weights.File)
	case !validSHA256.MatchString(m.Weights.SHA256):
		return bad("weights.sha256 %q is not 64 lower-case hex digits", m.Weights.SHA256)
	case len(m.Inputs) == 0:
		return bad("inputs is empty")
	case len(m.Outputs) == 0:
		return bad("outputs is empty")
	case !slices.Contains(knownKinds, m.Decoder.Kind):
		return bad("decoder.kind %q is not one of %v", m.Decoder.Kind, knownKinds)
	case m.Batching.MaxBatch < 0 || m.Batching.MaxBatch > MaxBatch:
		return bad("batching.max_batch %d must be 0 to %d", m.Batching.MaxBatch, MaxBatch)
	case m.Batching.MaxQueueDelay < 0 || m.Batching.MaxQueueDelay > time.Second:
		return bad("batching.max_queue_delay %v must be 0 to 1s", m.Batching.MaxQueueDelay)
	}
	if m.Build != nil {
		if err := m.Build.validate(); err != nil {
			return bad("%v", err)
		}
	}
	for i, in := range m.Inputs {
		if err := checkSpec(in.TensorSpec); err != nil {
			return bad("inputs[%d]: %v", i, err)
		}
		if len(in.Shape) == 4 {
			if in.Layout != "NCHW" && in.Layout != "NHWC" {
				return bad("inputs[%d] %q: layout %q must be NCHW or NHWC", i, in.Name, in.Layout)
			}
			if in.Color != "RGB" && in.Color != "BGR" && in.Color != "GRAY" {
				return bad("inputs[%d] %q: color %q must be RGB, BGR or GRAY", i, in.Name, in.Color)
			}
			if in.Scale <= 0 {
				return bad("inputs[%d] %q: scale must be positive", i, in.Name)
			}
			if in.Resize != "" && in.Resize != "stretch" && in.Resize != "letterbox" {
				return bad("inputs[%d] %q: resize %q must be stretch or letterbox", i, in.Name, in.Resize)
			}
		}
	}
	for i, out := range m.Outputs {
		if err := checkSpec(out); err != nil {
			return bad("outputs[%d]: %v", i, err)
		}
	}
	for i := range m.Routes {
		if err := m.Routes[i].compile(); err != nil {
			return bad("routes[%d]: %v", i, err)
		}
	}
	return nil
}

func checkSpec(s TensorSpec) error {
	if s.Name == "" {
		return errors.New("name is empty")
	}
	if !slices.Contains(knownDTypes, s.DType) {
		return fmt.Errorf("%q: dtype %q is not one of %v", s.Name, s.DType, knownDTypes)
	}
	if len(s.Shape) == 0 {
		return fmt.Errorf("%q: shape is empty", s.Name)
	}
	for _, d := range s.Shape {
		if d == 0 || d < Dynamic {
			return fmt.Errorf("%q: dimension %d must be positive or -1 (dynamic)", s.Name, d)
		}
	}
	return nil
}

// ErrSignatureMismatch is wrapped when an ONNX file's inputs or outputs disagree with the manifest.
var ErrSignatureMismatch = errors.New("model does not match its manifest")

// CheckSignature compares the inputs and outputs an ONNX file declares with the manifest's.
// A dimension the file leaves dynamic accepts any size the manifest fixes; a dimension the
// manifest calls dynamic must be dynamic in the file too. The error names both sides.
func (m *Manifest) CheckSignature(inputs, outputs []TensorSpec) error {
	want := make([]TensorSpec, len(m.Inputs))
	for i, in := range m.Inputs {
		want[i] = in.TensorSpec
	}
	if err := matchSpecs("input", want, inputs); err != nil {
		return fmt.Errorf("%w: %s: %v", ErrSignatureMismatch, m.Name, err)
	}
	if err := matchSpecs("output", m.Outputs, outputs); err != nil {
		return fmt.Errorf("%w: %s: %v", ErrSignatureMismatch, m.Name, err)
	}
	return nil
}

func matchSpecs(kind string, manifest, file []TensorSpec) error {
	if len(manifest) != len(file) {
		return fmt.Errorf("manifest declares %d %s(s) %v, the ONNX file has %d %v", len(manifest), kind, manifest, len(file), file)
	}
	for _, w := range manifest {
		i := slices.IndexFunc(file, func(f TensorSpec) bool { return f.Name == w.Name })
		if i < 0 {
			return fmt.Errorf("manifest %s %s is not in the ONNX file, which has %v", kind, w, file)
		}
		f := file[i]
		if w.DType != f.DType || !shapeFits(w.Shape, f.Shape) {
			return fmt.Errorf("manifest %s %s, ONNX file %s", kind, w, f)
		}
	}
	return nil
}

func shapeFits(manifest, file []int64) bool {
	if len(manifest) != len(file) {
		return false
	}
	for i := range manifest {
		if file[i] < 0 {
			continue
		}
		if manifest[i] != file[i] {
			return false
		}
	}
	return true
}

// Encode writes the manifest as YAML, for tools and tests that make manifests.
func (m *Manifest) Encode() ([]byte, error) {
	return yaml.Marshal(m)
}
