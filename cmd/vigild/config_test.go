package main

import (
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

func env(vars map[string]string) func(string) string {
	return func(k string) string { return vars[k] }
}

func TestConfigPrecedence(t *testing.T) {
	file := filepath.Join(t.TempDir(), "vigil.yaml")
	os.WriteFile(file, []byte("listen: 127.0.0.1:1001\nhttp: 127.0.0.1:2001\ndata_dir: /from/file\nshutdown_timeout: 3s\ninference:\n  workers: 3\n  provider: cuda\n"), 0o644)
	cfg, err := LoadConfig([]string{"--config", file, "--listen", "127.0.0.1:1003"},
		env(map[string]string{"VIGIL_LISTEN": "127.0.0.1:1002", "VIGIL_HTTP": "127.0.0.1:2002", "VIGIL_WORKERS": "4"}), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	checks := []struct{ name, got, want string }{
		{"listen (flag beats env and file)", cfg.Listen, "127.0.0.1:1003"},
		{"http (env beats file)", cfg.HTTP, "127.0.0.1:2002"},
		{"data dir (file beats default)", cfg.DataDir, "/from/file"},
		{"tokens file follows the data dir", cfg.TokensFile, "/from/file/tokens.json"},
		{"provider from file", cfg.Inference.Provider, "cuda"},
		{"workers (env beats file)", strconv.Itoa(cfg.Inference.Workers), "4"},
		{"shutdown timeout from file", cfg.ShutdownTimeout.String(), (3 * time.Second).String()},
		{"log level default", cfg.LogLevel, "info"},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s: got %q, want %q", c.name, c.got, c.want)
		}
	}
	if err := cfg.Validate(); err != nil {
		t.Errorf("Validate: %v", err)
	}
}

func TestConfigFromEnvironmentOnly(t *testing.T) {
	cfg, err := LoadConfig(nil, env(map[string]string{"VIGIL_DATA_DIR": "/d", "VIGIL_MODEL_MIRROR": "/a:/b"}), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.DataDir != "/d" || strings.Join(cfg.Models.Mirrors, ",") != "/a,/b" {
		t.Errorf("got data dir %q and mirrors %q, want /d and [/a /b]", cfg.DataDir, cfg.Models.Mirrors)
	}
}

func TestConfigValidateNamesTheSetting(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"--listen", "7443"}, "--listen (VIGIL_LISTEN)"},
		{[]string{"--http", "localhost:http"}, "--http (VIGIL_HTTP)"},
		{[]string{"--provider", "rocm"}, "--provider (VIGIL_PROVIDER)"},
		{[]string{"--workers", "-1"}, "--workers (VIGIL_WORKERS)"},
		{[]string{"--tls-cert", "/etc/hostname"}, "--tls-cert (VIGIL_TLS_CERT) and --tls-key (VIGIL_TLS_KEY)"},
		{[]string{"--tls-cert", "/nonexistent.pem", "--tls-key", "/nonexistent.key"}, "--tls-cert (VIGIL_TLS_CERT)"},
		{[]string{"--log-level", "loud"}, "--log-level (VIGIL_LOG_LEVEL)"},
		{[]string{"--shutdown-timeout", "0s"}, "--shutdown-timeout (VIGIL_SHUTDOWN_TIMEOUT)"},
		{[]string{"--data-dir", ""}, "--data-dir (VIGIL_DATA_DIR)"},
	}
	for _, tt := range tests {
		cfg, err := LoadConfig(tt.args, env(nil), io.Discard)
		if err == nil {
			err = cfg.Validate()
		}
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%v: got %v, want an error naming %s", tt.args, err, tt.want)
		}
	}
}

func TestConfigParseErrors(t *testing.T) {
	tests := []struct {
		name string
		args []string
		env  map[string]string
		file string
		want string
	}{
		{"bad env number", nil, map[string]string{"VIGIL_WORKERS": "two"}, "", "VIGIL_WORKERS"},
		{"bad env duration", nil, map[string]string{"VIGIL_SHUTDOWN_TIMEOUT": "soon"}, "", "VIGIL_SHUTDOWN_TIMEOUT"},
		{"unknown flag", []string{"--listn", "x"}, nil, "", "listn"},
		{"unknown file key", nil, nil, "lisen: 127.0.0.1:1\n", "lisen"},
		{"stray argument", []string{"serve"}, nil, "", "serve"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := tt.args
			if tt.file != "" {
				p := filepath.Join(t.TempDir(), "c.yaml")
				os.WriteFile(p, []byte(tt.file), 0o644)
				args = append(args, "--config", p)
			}
			_, err := LoadConfig(args, env(tt.env), io.Discard)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want an error naming %s", err, tt.want)
			}
		})
	}
}

// TestHelpStatesEveryLimit: an operator reads the bounds, with their defaults, in --help.
func TestHelpStatesEveryLimit(t *testing.T) {
	var help strings.Builder
	LoadConfig([]string{"--help"}, env(nil), &help)
	for flag, def := range map[string]string{
		"max-streams": "256", "max-streams-per-principal": "32", "stream-idle-timeout": "1m0s",
		"max-open-streams": "16", "max-frame-memory": "536870912", "max-connections": "512", "conn-idle-timeout": "5m0s",
		"http-body-idle-timeout": "10s", "http-body-timeout": "30s", "max-frame-bytes": "8388608", "max-frame-side": "4096",
		"max-tracks-per-stream": "32", "max-tracks-per-loop": "32", "max-track-history": "600",
		"max-overlay-bytes": "33554432", "max-camera-labels": "64", "max-regions": "32",
		"max-frames": "5000", "max-rows": "4096", "max-cols": "4096", "max-bytes": "2147483648",
	} {
		i := strings.Index(help.String(), "-"+flag+" value\n")
		if i < 0 {
			t.Errorf("--help does not list --%s", flag)
			continue
		}
		line := help.String()[i:]
		line = line[:strings.Index(line[len(flag)+8:], "\n  -")+len(flag)+8]
		if !strings.Contains(line, "(default "+def+")") {
			t.Errorf("--%s: %q, want its default %s", flag, line, def)
		}
	}
	cfg, err := LoadConfig([]string{"--max-streams", "0"}, env(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "--max-streams (VIGIL_MAX_STREAMS)") {
		t.Errorf("--max-streams 0: %v, want an error naming the flag", err)
	}
}
