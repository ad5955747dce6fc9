package main

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"sigs.k8s.io/yaml"

	"github.com/vigil-health/vigil/internal/testenv"
)

// The Kubernetes manifests in deploy/ are checked here, since there is no cluster to apply
// them to: every document decodes strictly (an unknown or misspelt field fails) into the
// Kubernetes API type its kind names; vigild's arguments and environment in them pass
// vigild's own config validation; and the pieces agree with each other.

// kustomization is the part of kustomize's file these manifests use; strict decoding fails
// on anything else.
type kustomization struct {
	APIVersion string   `json:"apiVersion"`
	Kind       string   `json:"kind"`
	Namespace  string   `json:"namespace,omitempty"`
	Resources  []string `json:"resources"`
	Labels     []struct {
		Pairs map[string]string `json:"pairs"`
	} `json:"labels,omitempty"`
	Patches []struct {
		Path   string `json:"path"`
		Target struct {
			Kind string `json:"kind"`
			Name string `json:"name"`
		} `json:"target"`
	} `json:"patches,omitempty"`
}

// manifests are the decoded documents of one folder.
type manifests struct {
	deployments []*appsv1.Deployment
	services    []*corev1.Service
	pdbs        []*policyv1.PodDisruptionBudget
	pvcs        []*corev1.PersistentVolumeClaim
	secrets     []*corev1.Secret
	kust        *kustomization
}

func decodeStrict(t *testing.T, file string, doc []byte, into any) {
	t.Helper()
	if err := yaml.UnmarshalStrict(doc, into); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
}

// load decodes every document of the YAML files, each into its kind's type.
func load(t *testing.T, files ...string) manifests {
	t.Helper()
	var m manifests
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		for _, doc := range bytes.Split(data, []byte("\n---\n")) {
			var head struct {
				APIVersion string `json:"apiVersion"`
				Kind       string `json:"kind"`
			}
			if err := yaml.Unmarshal(doc, &head); err != nil {
				t.Fatalf("%s: %v", file, err)
			}
			switch head.APIVersion + " " + head.Kind {
			case "apps/v1 Deployment":
				d := new(appsv1.Deployment)
				decodeStrict(t, file, doc, d)
				m.deployments = append(m.deployments, d)
			case "v1 Service":
				s := new(corev1.Service)
				decodeStrict(t, file, doc, s)
				m.services = append(m.services, s)
			case "policy/v1 PodDisruptionBudget":
				p := new(policyv1.PodDisruptionBudget)
				decodeStrict(t, file, doc, p)
				m.pdbs = append(m.pdbs, p)
			case "v1 PersistentVolumeClaim":
				p := new(corev1.PersistentVolumeClaim)
				decodeStrict(t, file, doc, p)
				m.pvcs = append(m.pvcs, p)
			case "v1 Secret":
				s := new(corev1.Secret)
				decodeStrict(t, file, doc, s)
				m.secrets = append(m.secrets, s)
			case "kustomize.config.k8s.io/v1beta1 Kustomization":
				m.kust = new(kustomization)
				decodeStrict(t, file, doc, m.kust)
			default:
				t.Fatalf("%s: a document of kind %q %q that this test does not know", file, head.APIVersion, head.Kind)
			}
		}
	}
	return m
}

// vigildConfig runs a container's arguments and environment through vigild's own config
// loading and validation, with values from Secrets standing in for secretKeyRefs.
func vigildConfig(t *testing.T, c corev1.Container, secrets []*corev1.Secret) Config {
	t.Helper()
	env := map[string]string{}
	for _, e := range c.Env {
		switch {
		case e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil:
			ref := e.ValueFrom.SecretKeyRef
			i := slices.IndexFunc(secrets, func(s *corev1.Secret) bool { return s.Name == ref.Name })
			if i < 0 {
				t.Fatalf("%s comes from Secret %q, which secrets.example.yaml does not describe", e.Name, ref.Name)
			}
			v, ok := secrets[i].StringData[ref.Key]
			if !ok {
				t.Fatalf("%s comes from key %q of Secret %q, which has no such key", e.Name, ref.Key, ref.Name)
			}
			env[e.Name] = v
		case e.ValueFrom != nil:
			t.Fatalf("%s: only secretKeyRef is expected", e.Name)
		default:
			env[e.Name] = e.Value
		}
	}
	cfg, err := LoadConfig(c.Args, func(k string) string { return env[k] }, io.Discard)
	if err != nil {
		t.Fatalf("container %s: vigild refuses its arguments: %v", c.Name, err)
	}
	// Validation looks for the files the flags name: files in a mounted volume (a Secret's)
	// stand here as empty files in a temporary folder.
	check, dir := cfg, t.TempDir()
	for _, f := range []*string{&check.TLSCert, &check.TLSKey, &check.HTTPTLSCert, &check.HTTPTLSKey, &check.ClientCA} {
		for _, vm := range c.VolumeMounts {
			if *f != "" && strings.HasPrefix(*f, vm.MountPath+"/") {
				*f = filepath.Join(dir, *f)
				os.MkdirAll(filepath.Dir(*f), 0o755)
				os.WriteFile(*f, nil, 0o600)
			}
		}
	}
	if err := check.Validate(); err != nil {
		t.Fatalf("container %s: vigild refuses its arguments: %v", c.Name, err)
	}
	return cfg
}

func TestKubernetesManifests(t *testing.T) {
	deploy := filepath.Join(testenv.RepoRoot(), "deploy")
	base := load(t, filepath.Join(deploy, "base", "kustomization.yaml"))
	var files []string
	for _, r := range base.kust.Resources {
		files = append(files, filepath.Join(deploy, "base", r))
	}
	m := load(t, files...)
	secrets := load(t, filepath.Join(deploy, "secrets.example.yaml")).secrets
	if len(m.deployments) != 1 || len(m.pdbs) != 1 || len(m.services) != 2 || len(m.pvcs) != 1 {
		t.Fatalf("want one Deployment, two Services, a PodDisruptionBudget and a models volume; got %d, %d, %d, %d",
			len(m.deployments), len(m.services), len(m.pdbs), len(m.pvcs))
	}
	d := m.deployments[0]
	pod := d.Spec.Template
	for k, v := range d.Spec.Selector.MatchLabels {
		if pod.Labels[k] != v {
			t.Errorf("the Deployment's selector %s=%s does not match its pods' labels", k, v)
		}
	}
	if len(pod.Spec.Containers) != 1 {
		t.Fatalf("want one container, got %d", len(pod.Spec.Containers))
	}
	c := pod.Spec.Containers[0]
	cfg := vigildConfig(t, c, secrets)

	// The review store is PostgreSQL, from a Secret; replicas need it.
	if !strings.HasPrefix(cfg.Store, "postgres://") {
		t.Errorf("the store is %q, want PostgreSQL from the vigil-store Secret", cfg.Store)
	}
	for _, e := range c.Env {
		if e.Name == "VIGIL_STORE" && e.ValueFrom == nil {
			t.Error("VIGIL_STORE is written into the manifest; it must come from a Secret")
		}
	}
	if *d.Spec.Replicas < 2 {
		t.Errorf("%d replicas; the manifests are for several", *d.Spec.Replicas)
	}

	// Probes: gRPC health on the health port vigild serves.
	ports := map[string]int32{}
	for _, p := range c.Ports {
		ports[p.Name] = p.ContainerPort
	}
	portOf := func(addr string) int32 {
		var p int32
		fmt.Sscanf(addr[strings.LastIndex(addr, ":")+1:], "%d", &p)
		return p
	}
	if ports["health"] != portOf(cfg.HealthListen) || ports["grpc"] != portOf(cfg.Listen) || ports["http"] != portOf(cfg.HTTP) {
		t.Errorf("container ports %v do not match --listen %s, --http %s, --health-listen %s", ports, cfg.Listen, cfg.HTTP, cfg.HealthListen)
	}
	for name, probe := range map[string]*corev1.Probe{"readiness": c.ReadinessProbe, "liveness": c.LivenessProbe} {
		if probe == nil || probe.GRPC == nil || probe.GRPC.Port != ports["health"] {
			t.Errorf("the %s probe is not gRPC health on port %d: %+v", name, ports["health"], probe)
		}
	}
	// Resources: requests for the scheduler.
	if c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() {
		t.Errorf("resource requests %v: want CPU and memory", c.Resources.Requests)
	}
	// Graceful shutdown: the preStop pause and vigild's drain fit in the grace period.
	grace := time.Duration(*pod.Spec.TerminationGracePeriodSeconds) * time.Second
	pause := time.Duration(0)
	if c.Lifecycle != nil && c.Lifecycle.PreStop != nil && c.Lifecycle.PreStop.Sleep != nil {
		pause = time.Duration(c.Lifecycle.PreStop.Sleep.Seconds) * time.Second
	}
	if pause+cfg.ShutdownTimeout+5*time.Second > grace {
		t.Errorf("preStop %s + --shutdown-timeout %s does not fit in terminationGracePeriodSeconds %s with 5 s to spare", pause, cfg.ShutdownTimeout, grace)
	}
	// Models: a read-only volume, searched by sha256, where vigild's mirror setting points.
	mounts := map[string]corev1.VolumeMount{}
	for _, vm := range c.VolumeMounts {
		mounts[vm.Name] = vm
	}
	if vm, ok := mounts["models"]; !ok || !vm.ReadOnly || !slices.Contains(cfg.Models.Mirrors, vm.MountPath) {
		t.Errorf("models volume mount %+v; want it read-only and in the mirrors %v", vm, cfg.Models.Mirrors)
	}
	volumes := map[string]corev1.Volume{}
	for _, v := range pod.Spec.Volumes {
		volumes[v.Name] = v
	}
	for name := range mounts {
		if _, ok := volumes[name]; !ok {
			t.Errorf("volume mount %s has no volume", name)
		}
	}
	if v := volumes["models"]; v.PersistentVolumeClaim == nil || v.PersistentVolumeClaim.ClaimName != m.pvcs[0].Name {
		t.Errorf("the models volume is not the claim %s", m.pvcs[0].Name)
	}
	for _, f := range []string{cfg.TLSCert, cfg.TLSKey, cfg.TokensFile} {
		inMount := false
		for _, vm := range c.VolumeMounts {
			inMount = inMount || strings.HasPrefix(f, vm.MountPath+"/")
		}
		if !inMount {
			t.Errorf("%s is in no mounted volume", f)
		}
	}

	// The Services and the budget reach the pods by their labels and ports by name.
	for _, s := range m.services {
		for k, v := range s.Spec.Selector {
			if pod.Labels[k] != v {
				t.Errorf("Service %s selects %s=%s, which the pods do not carry", s.Name, k, v)
			}
		}
		for _, p := range s.Spec.Ports {
			if _, ok := ports[p.TargetPort.StrVal]; !ok {
				t.Errorf("Service %s targets port %q, which the container does not name", s.Name, p.TargetPort.StrVal)
			}
		}
	}
	pdb := m.pdbs[0]
	for k, v := range pdb.Spec.Selector.MatchLabels {
		if pod.Labels[k] != v {
			t.Errorf("the PodDisruptionBudget selects %s=%s, which the pods do not carry", k, v)
		}
	}
	if pdb.Spec.MinAvailable == nil || pdb.Spec.MinAvailable.IntValue() < 1 || pdb.Spec.MinAvailable.IntValue() >= int(*d.Spec.Replicas) {
		t.Errorf("minAvailable %v with %d replicas: want at least one up and one that may go", pdb.Spec.MinAvailable, *d.Spec.Replicas)
	}

	// The GPU overlay: a patch of the same Deployment with one GPU and the CUDA provider.
	gpu := load(t, filepath.Join(deploy, "gpu", "kustomization.yaml"))
	if len(gpu.kust.Patches) != 1 || !slices.Contains(gpu.kust.Resources, "../base") {
		t.Fatalf("the GPU overlay: %+v", gpu.kust)
	}
	patch := load(t, filepath.Join(deploy, "gpu", gpu.kust.Patches[0].Path)).deployments
	if len(patch) != 1 || patch[0].Name != d.Name || len(patch[0].Spec.Template.Spec.Containers) != 1 {
		t.Fatalf("the GPU patch must change the Deployment %s's one container", d.Name)
	}
	gc := patch[0].Spec.Template.Spec.Containers[0]
	if gc.Name != c.Name {
		t.Errorf("the GPU patch names container %s, the Deployment %s", gc.Name, c.Name)
	}
	if q := gc.Resources.Limits[corev1.ResourceName("nvidia.com/gpu")]; q.Value() != 1 {
		t.Errorf("the GPU patch asks for %v nvidia.com/gpu, want 1", q.String())
	}
	gc.Env, gc.VolumeMounts = c.Env, c.VolumeMounts // as the strategic merge keeps them
	if gcfg := vigildConfig(t, gc, secrets); gcfg.Inference.Provider != "cuda" {
		t.Errorf("the GPU patch runs provider %q, want cuda", gcfg.Inference.Provider)
	}
}
