package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/vigil-health/vigil/dicomio"
	"github.com/vigil-health/vigil/inference"
	"github.com/vigil-health/vigil/models"
	"github.com/vigil-health/vigil/pipelines/gait"
	"github.com/vigil-health/vigil/pipelines/track"
	"github.com/vigil-health/vigil/pipelines/triage"
	"github.com/vigil-health/vigil/review"
	"github.com/vigil-health/vigil/server"
	"github.com/vigil-health/vigil/web"
)

// Config is everything vigild can be told. Each setting comes from, in rising precedence: the
// defaults below, the config file (--config or VIGIL_CONFIG), the environment, and flags.
type Config struct {
	DataDir string `yaml:"data_dir"`
	Listen  string `yaml:"listen"`
	HTTP    string `yaml:"http"`
	// HealthListen serves gRPC health alone, without TLS, for probes; empty turns it off.
	HealthListen string `yaml:"health_listen"`
	TokensFile   string `yaml:"tokens_file"`
	// Store is where findings, decisions and the audit live: empty for SQLite in DataDir, or
	// a postgres:// URL for a PostgreSQL that several replicas share.
	Store   string `yaml:"store"`
	TLSCert string `yaml:"tls_cert"`
	TLSKey  string `yaml:"tls_key"`
	// HTTPTLSCert and HTTPTLSKey serve the page over TLS; without them the gRPC pair serves
	// both listeners.
	HTTPTLSCert string `yaml:"http_tls_cert"`
	HTTPTLSKey  string `yaml:"http_tls_key"`
	// ClientCA turns on client certificates for gRPC; ClientAuth says whether one is
	// "optional" (a token serves instead) or "require"d.
	ClientCA   string `yaml:"client_ca"`
	ClientAuth string `yaml:"client_auth"`
	// ViewerURL is a DICOMweb viewer's URL template with {study}; the page links studies to it.
	ViewerURL string `yaml:"viewer_url"`
	LogLevel  string `yaml:"log_level"`
	LogFormat string `yaml:"log_format"`
	// ShutdownTimeout is how long running calls may drain before they are cut off.
	ShutdownTimeout time.Duration `yaml:"shutdown_timeout"`
	// RefusalRetention is how long refused calls are kept in the refusals chain (0: always).
	RefusalRetention time.Duration `yaml:"refusal_retention"`

	Models    ModelsConfig    `yaml:"models"`
	Inference InferenceConfig `yaml:"inference"`
	Imaging   ImagingConfig   `yaml:"imaging"`
	Limits    LimitsConfig    `yaml:"limits"`
}

// LimitsConfig bounds what clients may make the server hold: each refusal names its flag.
type LimitsConfig struct {
	MaxStreams             int           `yaml:"max_streams"`
	MaxStreamsPerPrincipal int           `yaml:"max_streams_per_principal"`
	MaxOpenStreams         int           `yaml:"max_open_streams"`
	MaxConnections         int           `yaml:"max_connections"`
	ConnIdleTimeout        time.Duration `yaml:"conn_idle_timeout"`
	StreamIdleTimeout      time.Duration `yaml:"stream_idle_timeout"`
	HTTPBodyIdleTimeout    time.Duration `yaml:"http_body_idle_timeout"`
	HTTPBodyTimeout        time.Duration `yaml:"http_body_timeout"`
	MaxFrameBytes          int           `yaml:"max_frame_bytes"`
	MaxFrameMemory         int           `yaml:"max_frame_memory"`
	MaxFrameSide           int           `yaml:"max_frame_side"`
	MaxTracksPerStream     int           `yaml:"max_tracks_per_stream"`
	MaxTracksPerLoop       int           `yaml:"max_tracks_per_loop"`
	MaxTrackHistory        int           `yaml:"max_track_history"`
	MaxOverlayBytes        int           `yaml:"max_overlay_bytes"`
	MaxCameraLabels        int           `yaml:"max_camera_labels"`
	MaxRegions             int           `yaml:"max_regions"`
}

// ImagingConfig chooses the triage model and bounds what an instance may be.
type ImagingConfig struct {
	Model     string `yaml:"model"`
	MaxFrames int    `yaml:"max_frames"`
	MaxRows   int    `yaml:"max_rows"`
	MaxCols   int    `yaml:"max_cols"`
	MaxBytes  int    `yaml:"max_bytes"`
}

// ModelsConfig says where manifests and weights are.
type ModelsConfig struct {
	// Dir holds extra model folders; a manifest there replaces a builtin one of the same name.
	Dir      string   `yaml:"dir"`
	CacheDir string   `yaml:"cache_dir"`
	Mirrors  []string `yaml:"mirrors"`
}

// InferenceConfig chooses the runtime library, the provider and the threading.
type InferenceConfig struct {
	Library        string `yaml:"library"`
	Provider       string `yaml:"provider"`
	DeviceID       int    `yaml:"device_id"`
	Workers        int    `yaml:"workers"`
	QueueDepth     int    `yaml:"queue_depth"`
	IntraOpThreads int    `yaml:"intra_op_threads"`
}

// DefaultConfig is a server for one machine: localhost only, data in ./data, CPU.
func DefaultConfig() Config {
	return Config{
		DataDir:          "data",
		Listen:           "127.0.0.1:7443",
		HTTP:             "127.0.0.1:7480",
		LogLevel:         "info",
		LogFormat:        "text",
		ClientAuth:       "optional",
		ShutdownTimeout:  15 * time.Second,
		RefusalRetention: 365 * 24 * time.Hour,
		Models:           ModelsConfig{CacheDir: models.DefaultCacheDir(), Mirrors: models.MirrorsFromEnv()},
		Inference:        InferenceConfig{Provider: "cpu", Workers: 2, QueueDepth: 64},
		Imaging: ImagingConfig{Model: "", MaxFrames: dicomio.DefaultLimits.MaxFrames,
			MaxRows: dicomio.DefaultLimits.MaxRows, MaxCols: dicomio.DefaultLimits.MaxCols, MaxBytes: int(dicomio.DefaultLimits.MaxBytes)},
		Limits: LimitsConfig{
			MaxStreams: server.DefaultStreamLimits.MaxStreams, MaxStreamsPerPrincipal: server.DefaultStreamLimits.MaxStreamsPerPrincipal,
			MaxOpenStreams: server.DefaultStreamLimits.MaxOpenStreams, MaxConnections: server.DefaultConnectionLimits.Max,
			ConnIdleTimeout:   server.DefaultConnectionLimits.Idle,
			StreamIdleTimeout: server.DefaultStreamLimits.IdleTimeout, HTTPBodyIdleTimeout: web.DefaultBodyIdle, HTTPBodyTimeout: web.DefaultBodyTimeout,
			MaxFrameBytes: server.DefaultMaxFrameBytes, MaxFrameSide: server.DefaultMaxFrameSide, MaxFrameMemory: server.DefaultMaxFrameMemory,
			MaxTracksPerStream: track.DefaultMaxTracks, MaxTracksPerLoop: triage.DefaultMaxTracks, MaxTrackHistory: gait.DefaultMaxSamples,
			MaxOverlayBytes: server.DefaultMaxOverlayBytes, MaxCameraLabels: server.MaxCameraLabels, MaxRegions: dicomio.MaxRegions,
		},
	}
}

// setting ties one Config field to its flag and environment variable.
type setting struct {
	flag, env, usage string
	target           any // *string, *int, *time.Duration or *[]string
}

func (c *Config) settings() []setting {
	return []setting{
		{"data-dir", "VIGIL_DATA_DIR", "folder for the database, tokens and generated files", &c.DataDir},
		{"listen", "VIGIL_LISTEN", "gRPC address, host:port", &c.Listen},
		{"health-listen", "VIGIL_HEALTH_LISTEN", "gRPC health alone, without TLS or tokens, for probes such as Kubernetes' (host:port); empty turns it off", &c.HealthListen},
		{"http", "VIGIL_HTTP", "HTTP address for /metrics and the web page, host:port; empty turns it off", &c.HTTP},
		{"store", "VIGIL_STORE", "review store: empty for SQLite in --data-dir, or postgres://USER@HOST:PORT/DB for a PostgreSQL that replicas share (password from PGPASSWORD or ~/.pgpass, not the URL)", &c.Store},
		{"tokens-file", "VIGIL_TOKENS_FILE", "bearer tokens file (default <data-dir>/tokens.json)", &c.TokensFile},
		{"tls-cert", "VIGIL_TLS_CERT", "TLS certificate (PEM); with --tls-key, gRPC serves TLS only", &c.TLSCert},
		{"tls-key", "VIGIL_TLS_KEY", "TLS private key (PEM)", &c.TLSKey},
		{"http-tls-cert", "VIGIL_HTTP_TLS_CERT", "TLS certificate (PEM) for the HTTP listener (default: the --tls-cert pair, when given)", &c.HTTPTLSCert},
		{"http-tls-key", "VIGIL_HTTP_TLS_KEY", "TLS private key (PEM) for the HTTP listener", &c.HTTPTLSKey},
		{"client-ca", "VIGIL_CLIENT_CA", "CA certificates (PEM) that sign gRPC client certificates: subject CN is the principal, OU the role (needs --tls-cert)", &c.ClientCA},
		{"client-auth", "VIGIL_CLIENT_AUTH", "with --client-ca: optional (a bearer token serves instead) or require (no certificate, no connection)", &c.ClientAuth},
		{"viewer-url", "VIGIL_VIEWER_URL", "a DICOMweb viewer's URL with {study} for the Study Instance UID, such as https://ohif.example/viewer?StudyInstanceUIDs={study}; the review page links each study to it", &c.ViewerURL},
		{"log-level", "VIGIL_LOG_LEVEL", "debug, info, warn or error", &c.LogLevel},
		{"log-format", "VIGIL_LOG_FORMAT", "text or json", &c.LogFormat},
		{"shutdown-timeout", "VIGIL_SHUTDOWN_TIMEOUT", "how long running calls may drain at shutdown", &c.ShutdownTimeout},
		{"refusal-retention", "VIGIL_REFUSAL_RETENTION", "how long refused calls stay in the refusals chain, checked hourly (0: kept for ever)", &c.RefusalRetention},
		{"models-dir", "VIGIL_MODELS_DIR", "folder of extra model folders with manifests", &c.Models.Dir},
		{"model-cache", "VIGIL_MODEL_CACHE", "folder where verified weights are kept by sha256", &c.Models.CacheDir},
		{"model-mirror", "VIGIL_MODEL_MIRROR", "folders or URLs to fetch weights from, separated by ',' (or ':' for folders)", &c.Models.Mirrors},
		{"ort-lib", "VIGIL_ORT_LIB", "path of libonnxruntime.so.1", &c.Inference.Library},
		{"provider", "VIGIL_PROVIDER", "execution provider: cpu, cuda or tensorrt (falls back to cpu)", &c.Inference.Provider},
		{"device-id", "VIGIL_DEVICE_ID", "GPU device for cuda and tensorrt", &c.Inference.DeviceID},
		{"workers", "VIGIL_WORKERS", "runs of one model at once", &c.Inference.Workers},
		{"queue-depth", "VIGIL_QUEUE_DEPTH", "runs of one model that may wait before callers get ResourceExhausted", &c.Inference.QueueDepth},
		{"intra-op-threads", "VIGIL_INTRA_OP_THREADS", "ONNX Runtime threads per run; 0 shares the CPUs among workers", &c.Inference.IntraOpThreads},
		{"triage-model", "VIGIL_TRIAGE_MODEL", "a model Imaging runs on every instance whose request names none (empty: the models' routes choose)", &c.Imaging.Model},
		{"max-frames", "VIGIL_MAX_FRAMES", "most frames an instance may have", &c.Imaging.MaxFrames},
		{"max-rows", "VIGIL_MAX_ROWS", "most rows an image may have", &c.Imaging.MaxRows},
		{"max-cols", "VIGIL_MAX_COLS", "most columns an image may have", &c.Imaging.MaxCols},
		{"max-bytes", "VIGIL_MAX_BYTES", "largest DICOM file accepted, in bytes", &c.Imaging.MaxBytes},
		{"max-regions", "VIGIL_MAX_REGIONS", "most items in an image's Sequence of Ultrasound Regions", &c.Limits.MaxRegions},
		{"max-tracks-per-loop", "VIGIL_MAX_TRACKS_PER_LOOP", "most lesions one ultrasound loop may follow at once (the weakest go)", &c.Limits.MaxTracksPerLoop},
		{"max-overlay-bytes", "VIGIL_MAX_OVERLAY_BYTES", "overlay bytes stored per instance; the most urgent findings keep theirs", &c.Limits.MaxOverlayBytes},
		{"max-streams", "VIGIL_MAX_STREAMS", "streams open at once on the server (uploads, cameras, watches)", &c.Limits.MaxStreams},
		{"max-streams-per-principal", "VIGIL_MAX_STREAMS_PER_PRINCIPAL", "streams one principal may hold open", &c.Limits.MaxStreamsPerPrincipal},
		{"max-open-streams", "VIGIL_MAX_OPEN_STREAMS", "streams open at once by callers without a credential (health watches), apart from --max-streams", &c.Limits.MaxOpenStreams},
		{"max-connections", "VIGIL_MAX_CONNECTIONS", "connections each listener (gRPC, health, HTTP) holds at once; more are closed when accepted", &c.Limits.MaxConnections},
		{"conn-idle-timeout", "VIGIL_CONN_IDLE_TIMEOUT", "a connection with no call open this long is closed (gRPC and HTTP keep-alive)", &c.Limits.ConnIdleTimeout},
		{"stream-idle-timeout", "VIGIL_STREAM_IDLE_TIMEOUT", "a client stream (upload or camera) that sends nothing this long is closed", &c.Limits.StreamIdleTimeout},
		{"http-body-idle-timeout", "VIGIL_HTTP_BODY_IDLE_TIMEOUT", "an HTTP request body that sends nothing this long fails", &c.Limits.HTTPBodyIdleTimeout},
		{"http-body-timeout", "VIGIL_HTTP_BODY_TIMEOUT", "an HTTP request body not whole this long after it starts fails", &c.Limits.HTTPBodyTimeout},
		{"max-frame-bytes", "VIGIL_MAX_FRAME_BYTES", "largest camera frame accepted, in bytes", &c.Limits.MaxFrameBytes},
		{"max-frame-memory", "VIGIL_MAX_FRAME_MEMORY", "bytes of decoded camera frames all streams may hold at once; a frame over it gets a frame error", &c.Limits.MaxFrameMemory},
		{"max-frame-side", "VIGIL_MAX_FRAME_SIDE", "largest camera frame width or height accepted, in pixels", &c.Limits.MaxFrameSide},
		{"max-tracks-per-stream", "VIGIL_MAX_TRACKS_PER_STREAM", "most people one camera stream follows at once", &c.Limits.MaxTracksPerStream},
		{"max-track-history", "VIGIL_MAX_TRACK_HISTORY", "frames of gait kept per person, whatever the capture times (the fall rules keep 4 s, at most 480)", &c.Limits.MaxTrackHistory},
		{"max-camera-labels", "VIGIL_MAX_CAMERA_LABELS", "cameras with their own /metrics label; the rest count under \"other\"", &c.Limits.MaxCameraLabels},
	}
}

// LoadConfig builds the config from the defaults, the file, the environment and args.
func LoadConfig(args []string, getenv func(string) string, stderr io.Writer) (Config, error) {
	cfg := DefaultConfig()
	path := getenv("VIGIL_CONFIG")
	for i, a := range args {
		switch {
		case a == "--config" || a == "-config":
			if i+1 < len(args) {
				path = args[i+1]
			}
		case strings.HasPrefix(a, "--config="), strings.HasPrefix(a, "-config="):
			path = a[strings.Index(a, "=")+1:]
		}
	}
	if path != "" {
		if err := cfg.loadFile(path); err != nil {
			return cfg, err
		}
	}
	for _, s := range cfg.settings() {
		if v := getenv(s.env); v != "" {
			if err := set(s.target, v); err != nil {
				return cfg, fmt.Errorf("%s=%q: %v", s.env, v, err)
			}
		}
	}
	fs := flag.NewFlagSet("vigild", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.String("config", path, "YAML config file (also VIGIL_CONFIG)")
	for _, s := range cfg.settings() {
		fs.Var(flagValue{s.target}, s.flag, s.usage+" (also "+s.env+")")
	}
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	if cfg.TokensFile == "" {
		cfg.TokensFile = filepath.Join(cfg.DataDir, "tokens.json")
	}
	return cfg, nil
}

func (c *Config) loadFile(path string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("config file: %w", err)
	}
	dec := yaml.NewDecoder(strings.NewReader(string(data)))
	dec.KnownFields(true)
	if err := dec.Decode(c); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("config file %s: %w", path, err)
	}
	return nil
}

// flagValue adapts a setting's target to flag.Value.
type flagValue struct{ target any }

func (f flagValue) String() string {
	switch t := f.target.(type) {
	case *string:
		return *t
	case *int:
		return strconv.Itoa(*t)
	case *time.Duration:
		return t.String()
	case *[]string:
		return strings.Join(*t, ",")
	}
	return ""
}

func (f flagValue) Set(v string) error { return set(f.target, v) }

func set(target any, v string) error {
	switch t := target.(type) {
	case *string:
		*t = v
	case *int:
		n, err := strconv.Atoi(v)
		if err != nil {
			return fmt.Errorf("not a whole number")
		}
		*t = n
	case *time.Duration:
		d, err := time.ParseDuration(v)
		if err != nil {
			return fmt.Errorf("not a duration such as 15s")
		}
		*t = d
	case *[]string:
		*t = models.SplitMirrors(v)
	default:
		return fmt.Errorf("unsupported setting type %T", target)
	}
	return nil
}

// Validate names the first setting that is wrong, as its flag and environment variable.
func (c Config) Validate() error {
	name := func(field any) string {
		for _, s := range c.settings() {
			if s.target == field {
				return "--" + s.flag + " (" + s.env + ")"
			}
		}
		return "setting"
	}
	addr := func(field *string, what string, optional bool) error {
		if *field == "" && optional {
			return nil
		}
		_, port, err := net.SplitHostPort(*field)
		if err != nil {
			return fmt.Errorf("%s: %q is not host:port for the %s", name(field), *field, what)
		}
		if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
			return fmt.Errorf("%s: port %q of %q is not a number from 0 to 65535", name(field), port, *field)
		}
		return nil
	}
	if c.DataDir == "" {
		return fmt.Errorf("%s: must not be empty", name(&c.DataDir))
	}
	if c.Store != "" && !review.IsPostgresURL(c.Store) {
		return fmt.Errorf("%s: %q is not a postgres:// URL; leave it empty for SQLite in --data-dir", name(&c.Store), redactURL(c.Store))
	}
	if err := addr(&c.Listen, "gRPC listener", false); err != nil {
		return err
	}
	if err := addr(&c.HTTP, "HTTP listener", true); err != nil {
		return err
	}
	if err := addr(&c.HealthListen, "health listener", true); err != nil {
		return err
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		return fmt.Errorf("%s and %s: give both or neither", name(&c.TLSCert), name(&c.TLSKey))
	}
	if (c.HTTPTLSCert == "") != (c.HTTPTLSKey == "") {
		return fmt.Errorf("%s and %s: give both or neither", name(&c.HTTPTLSCert), name(&c.HTTPTLSKey))
	}
	if c.ClientCA != "" && c.TLSCert == "" {
		return fmt.Errorf("%s: client certificates need TLS: give %s and %s too", name(&c.ClientCA), name(&c.TLSCert), name(&c.TLSKey))
	}
	if c.ViewerURL != "" && (!strings.Contains(c.ViewerURL, "{study}") || !strings.HasPrefix(c.ViewerURL, "https://") && !strings.HasPrefix(c.ViewerURL, "http://")) {
		return fmt.Errorf("%s: %q must be an http(s) URL with {study} in it", name(&c.ViewerURL), c.ViewerURL)
	}
	if c.ClientAuth != "optional" && c.ClientAuth != "require" {
		return fmt.Errorf("%s: %q is not optional or require", name(&c.ClientAuth), c.ClientAuth)
	}
	for _, f := range []*string{&c.TLSCert, &c.TLSKey, &c.HTTPTLSCert, &c.HTTPTLSKey, &c.ClientCA} {
		if *f != "" {
			if _, err := os.Stat(*f); err != nil {
				return fmt.Errorf("%s: %v", name(f), err)
			}
		}
	}
	if !slices.Contains([]string{"debug", "info", "warn", "error"}, c.LogLevel) {
		return fmt.Errorf("%s: %q is not debug, info, warn or error", name(&c.LogLevel), c.LogLevel)
	}
	if c.LogFormat != "text" && c.LogFormat != "json" {
		return fmt.Errorf("%s: %q is not text or json", name(&c.LogFormat), c.LogFormat)
	}
	if c.RefusalRetention < 0 {
		return fmt.Errorf("%s: must not be negative", name(&c.RefusalRetention))
	}
	if c.ShutdownTimeout <= 0 {
		return fmt.Errorf("%s: must be positive", name(&c.ShutdownTimeout))
	}
	if !slices.Contains(inference.Providers, c.Inference.Provider) {
		return fmt.Errorf("%s: %q is not one of %v", name(&c.Inference.Provider), c.Inference.Provider, inference.Providers)
	}
	for _, f := range []*int{&c.Inference.DeviceID, &c.Inference.Workers, &c.Inference.QueueDepth, &c.Inference.IntraOpThreads} {
		if *f < 0 {
			return fmt.Errorf("%s: %d must not be negative", name(f), *f)
		}
	}
	for _, f := range []*int{&c.Imaging.MaxFrames, &c.Imaging.MaxRows, &c.Imaging.MaxCols, &c.Imaging.MaxBytes,
		&c.Limits.MaxStreams, &c.Limits.MaxStreamsPerPrincipal, &c.Limits.MaxOpenStreams, &c.Limits.MaxConnections, &c.Limits.MaxFrameBytes, &c.Limits.MaxFrameMemory, &c.Limits.MaxFrameSide,
		&c.Limits.MaxTracksPerStream, &c.Limits.MaxTracksPerLoop, &c.Limits.MaxTrackHistory, &c.Limits.MaxOverlayBytes,
		&c.Limits.MaxCameraLabels, &c.Limits.MaxRegions} {
		if *f <= 0 {
			return fmt.Errorf("%s: %d must be positive", name(f), *f)
		}
	}
	for _, f := range []*time.Duration{&c.Limits.ConnIdleTimeout, &c.Limits.StreamIdleTimeout, &c.Limits.HTTPBodyIdleTimeout, &c.Limits.HTTPBodyTimeout} {
		if *f <= 0 {
			return fmt.Errorf("%s: must be positive", name(f))
		}
	}
	if c.Inference.Workers > 64 {
		return fmt.Errorf("%s: %d is more than 64", name(&c.Inference.Workers), c.Inference.Workers)
	}
	return nil
}
