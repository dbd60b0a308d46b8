package deploy

import (
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"
)

const kustomizeBase = "kubernetes/base"

// operatorSecret is a Secret the base refers to and the operator creates.
type operatorSecret struct {
	name     string
	keys     []string
	optional bool
}

// operatorSecrets are the Secrets kustomization.yaml and README.md tell
// the operator to create: every Secret the base refers to and does not
// hold is one of these, with one of these keys.
var operatorSecrets = []operatorSecret{
	{name: "pushgate-redis", keys: []string{"url"}},
	{name: "pushgate-keyring", keys: []string{"keyring.yaml"}},
	{name: "pushgate-control-log", keys: []string{"log-key", "log-public-key"}},
	{name: "pushgate-fcm", keys: []string{"service-account.json"}, optional: true},
	{name: "pushgate-apns", keys: []string{"apns-key.p8"}, optional: true},
	{name: "pushgate-app-signing", keys: []string{"app-signing.pem"}, optional: true},
}

// sampleSecret is what the test puts in an operator's Secret: values
// pushgate's loader accepts where it reads them.
func sampleSecret(name, key string) string {
	private, public := logKeys()
	switch name + "/" + key {
	case "pushgate-redis/url":
		return "redis://redis.example.org:6379/0"
	case "pushgate-control-log/log-key":
		return private + "\n"
	case "pushgate-control-log/log-public-key":
		return public
	}
	return "sample " + key
}

// manifests is the built base, decoded.
type manifests struct {
	workloads  []workload
	services   []*corev1.Service
	pdbs       []*policyv1.PodDisruptionBudget
	configMaps map[string]*corev1.ConfigMap
	secrets    map[string]*corev1.Secret
	accounts   map[string]*corev1.ServiceAccount
}

// workload is a StatefulSet or a Deployment.
type workload struct {
	kind, name  string
	replicas    int32
	selector    *metav1.LabelSelector
	template    corev1.PodTemplateSpec
	claims      []string // volumeClaimTemplates
	serviceName string
}

func (w workload) String() string { return w.kind + "/" + w.name }

// role is the pushgate subcommand the workload's first container runs.
func (w workload) role() string {
	if c := w.template.Spec.Containers; len(c) > 0 && len(c[0].Args) > 0 {
		return c[0].Args[0]
	}
	return ""
}

// buildBase runs kustomize on the base, as kubectl apply -k does, and
// decodes every resource strictly into its Kubernetes API type: an
// unknown field or kind fails the test.
func buildBase(t *testing.T) *manifests {
	t.Helper()
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	resMap, err := k.Run(filesys.MakeFsOnDisk(), kustomizeBase)
	if err != nil {
		t.Fatalf("kustomize build %s: %v", kustomizeBase, err)
	}
	m := &manifests{configMaps: map[string]*corev1.ConfigMap{}, secrets: map[string]*corev1.Secret{}, accounts: map[string]*corev1.ServiceAccount{}}
	for _, r := range resMap.Resources() {
		raw, err := r.AsYAML()
		if err != nil {
			t.Fatal(err)
		}
		var tm metav1.TypeMeta
		if err := yaml.Unmarshal(raw, &tm); err != nil {
			t.Fatal(err)
		}
		id := tm.APIVersion + " " + tm.Kind
		decode := func(obj any) {
			t.Helper()
			if err := yaml.UnmarshalStrict(raw, obj); err != nil {
				t.Fatalf("%s %s: %v\n%s", id, r.GetName(), err, raw)
			}
		}
		switch id {
		case "apps/v1 StatefulSet":
			var s appsv1.StatefulSet
			decode(&s)
			w := workload{kind: "StatefulSet", name: s.Name, replicas: 1, selector: s.Spec.Selector, template: s.Spec.Template, serviceName: s.Spec.ServiceName}
			if s.Spec.Replicas != nil {
				w.replicas = *s.Spec.Replicas
			}
			for _, c := range s.Spec.VolumeClaimTemplates {
				w.claims = append(w.claims, c.Name)
			}
			m.workloads = append(m.workloads, w)
		case "apps/v1 Deployment":
			var d appsv1.Deployment
			decode(&d)
			w := workload{kind: "Deployment", name: d.Name, replicas: 1, selector: d.Spec.Selector, template: d.Spec.Template}
			if d.Spec.Replicas != nil {
				w.replicas = *d.Spec.Replicas
			}
			m.workloads = append(m.workloads, w)
		case "v1 Service":
			var s corev1.Service
			decode(&s)
			m.services = append(m.services, &s)
		case "v1 ConfigMap":
			var c corev1.ConfigMap
			decode(&c)
			m.configMaps[c.Name] = &c
		case "v1 Secret":
			var s corev1.Secret
			decode(&s)
			m.secrets[s.Name] = &s
		case "v1 ServiceAccount":
			var a corev1.ServiceAccount
			decode(&a)
			m.accounts[a.Name] = &a
		case "policy/v1 PodDisruptionBudget":
			var p policyv1.PodDisruptionBudget
			decode(&p)
			m.pdbs = append(m.pdbs, &p)
		default:
			t.Errorf("%s %s: a kind this test does not know: decode and check it here", id, r.GetName())
		}
	}
	return m
}

// selects reports whether a selector picks the workload's pods.
func selects(t *testing.T, sel *metav1.LabelSelector, w workload) bool {
	t.Helper()
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil {
		t.Fatalf("selector %v: %v", sel, err)
	}
	return !s.Empty() && s.Matches(labels.Set(w.template.Labels))
}

// serviceSelector is a Service's selector as a label selector.
func serviceSelector(s *corev1.Service) *metav1.LabelSelector {
	return &metav1.LabelSelector{MatchLabels: s.Spec.Selector}
}

// containerPort resolves a probe's or a Service's target port in a
// container: a name or a number of one of its ports.
func containerPort(c corev1.Container, p intstr.IntOrString) (int32, bool) {
	for _, cp := range c.Ports {
		if p.Type == intstr.String && cp.Name == p.StrVal || p.Type == intstr.Int && cp.ContainerPort == p.IntVal {
			return cp.ContainerPort, true
		}
	}
	return 0, false
}

// secretRef is one reference to a Secret.
type secretRef struct {
	where, name, key string
	optional         bool
}

// processOf describes a container as pushgate sees it, and every Secret
// and ConfigMap it refers to.
func (m *manifests) processOf(t *testing.T, w workload, c corev1.Container) (*process, []secretRef) {
	t.Helper()
	where := w.String() + " " + c.Name
	p := &process{name: where, role: w.role(), env: map[string]string{}}
	var refs []secretRef
	volumes := map[string]corev1.Volume{}
	for _, v := range w.template.Spec.Volumes {
		volumes[v.Name] = v
	}
	for _, vm := range c.VolumeMounts {
		mt := mount{target: vm.MountPath, source: vm.Name, readOnly: vm.ReadOnly, files: map[string]string{}}
		if vm.SubPath != "" {
			t.Errorf("%s: volume %s is mounted with subPath, which never sees updates", where, vm.Name)
		}
		v, ok := volumes[vm.Name]
		switch {
		case slices.Contains(w.claims, vm.Name):
			mt.kind = "state"
		case !ok:
			t.Errorf("%s: volumeMount %s names no volume", where, vm.Name)
			continue
		case v.ConfigMap != nil:
			mt.kind, mt.source = "config", v.ConfigMap.Name
			cm, ok := m.configMaps[v.ConfigMap.Name]
			if !ok {
				t.Errorf("%s: volume %s: ConfigMap %s is not in the base", where, vm.Name, v.ConfigMap.Name)
				continue
			}
			if len(v.ConfigMap.Items) == 0 {
				for k, d := range cm.Data {
					mt.files[k] = d
				}
			}
			for _, it := range v.ConfigMap.Items {
				d, ok := cm.Data[it.Key]
				if !ok {
					t.Errorf("%s: volume %s: ConfigMap %s has no key %s", where, vm.Name, cm.Name, it.Key)
				}
				mt.files[it.Path] = d
			}
		case v.Secret != nil:
			mt.kind, mt.source = "secret", v.Secret.SecretName
			optional := v.Secret.Optional != nil && *v.Secret.Optional
			if len(v.Secret.Items) == 0 {
				t.Errorf("%s: volume %s mounts every key of Secret %s: name the items, so that a key added later is not handed out", where, vm.Name, v.Secret.SecretName)
			}
			for _, it := range v.Secret.Items {
				refs = append(refs, secretRef{where: where + " volume " + vm.Name, name: v.Secret.SecretName, key: it.Key, optional: optional})
				mt.files[it.Path] = sampleSecret(v.Secret.SecretName, it.Key)
			}
		case v.EmptyDir != nil:
			mt.kind = "scratch"
		case v.PersistentVolumeClaim != nil:
			mt.kind = "state"
		default:
			t.Errorf("%s: volume %s: a kind of volume this test does not know", where, vm.Name)
			continue
		}
		p.mounts = append(p.mounts, mt)
	}
	if len(c.EnvFrom) > 0 {
		t.Errorf("%s: envFrom hides which settings a process gets: name each variable", where)
	}
	for _, e := range c.Env {
		switch {
		case e.ValueFrom == nil:
			p.env[e.Name] = e.Value
		case e.ValueFrom.SecretKeyRef != nil:
			r := e.ValueFrom.SecretKeyRef
			refs = append(refs, secretRef{where: where + " env " + e.Name, name: r.Name, key: r.Key, optional: r.Optional != nil && *r.Optional})
			p.env[e.Name] = sampleSecret(r.Name, r.Key)
		case e.ValueFrom.ConfigMapKeyRef != nil:
			r := e.ValueFrom.ConfigMapKeyRef
			cm, ok := m.configMaps[r.Name]
			if !ok {
				t.Errorf("%s: env %s: ConfigMap %s is not in the base", where, e.Name, r.Name)
				continue
			}
			p.env[e.Name] = cm.Data[r.Key]
		default:
			t.Errorf("%s: env %s: a source this test does not know", where, e.Name)
		}
	}
	return p, refs
}

func TestKubernetesBase(t *testing.T) {
	m := buildBase(t)
	roles := map[string]int32{}
	var refs []secretRef
	for _, w := range m.workloads {
		roles[w.role()] += w.replicas
		spec := w.template.Spec
		if !selects(t, w.selector, w) {
			t.Errorf("%s: its selector does not pick its own pods", w)
		}
		if w.replicas < 2 {
			t.Errorf("%s: %d replicas: one pod is a single point of failure", w, w.replicas)
		}
		if spec.AutomountServiceAccountToken == nil || *spec.AutomountServiceAccountToken {
			t.Errorf("%s: mounts a service account token pushgate never uses", w)
		}
		if _, ok := m.accounts[spec.ServiceAccountName]; !ok {
			t.Errorf("%s: service account %q is not in the base", w, spec.ServiceAccountName)
		}
		if w.kind == "StatefulSet" && !slices.ContainsFunc(m.services, func(s *corev1.Service) bool {
			return s.Name == w.serviceName && s.Spec.ClusterIP == corev1.ClusterIPNone && selects(t, serviceSelector(s), w)
		}) {
			t.Errorf("%s: serviceName %q is not a headless Service of the base that selects its pods", w, w.serviceName)
		}
		if len(spec.Containers) != 1 {
			t.Errorf("%s: %d containers, want pushgate alone", w, len(spec.Containers))
		}
		for _, c := range spec.Containers {
			p, r := m.processOf(t, w, c)
			refs = append(refs, r...)
			cfg := p.loadConfig(t)
			checkContainer(t, w, c)

			// The probes are on the port pushgate listens on for them,
			// on every interface.
			var addr string
			switch p.role {
			case "api":
				addr = cfg.Listen
			case "worker":
				addr = cfg.MetricsListen
				if addr == "" {
					t.Errorf("%s: metrics_listen is empty: a worker then serves no /healthz or /readyz", p.name)
					continue
				}
			default:
				t.Errorf("%s: runs %q, want api or worker", p.name, p.role)
				continue
			}
			want, wildcard := port(t, p.name+" probe address", addr)
			if !wildcard {
				t.Errorf("%s: %s listens on %s, which the kubelet's probes do not reach", p.name, p.role, addr)
			}
			for _, pr := range []struct {
				kind, path string
				probe      *corev1.Probe
			}{{"liveness", "/healthz", c.LivenessProbe}, {"readiness", "/readyz", c.ReadinessProbe}} {
				if pr.probe == nil || pr.probe.HTTPGet == nil {
					t.Errorf("%s: no %s probe (httpGet %s)", p.name, pr.kind, pr.path)
					continue
				}
				if pr.probe.HTTPGet.Path != pr.path {
					t.Errorf("%s: %s probe on %s, want %s", p.name, pr.kind, pr.probe.HTTPGet.Path, pr.path)
				}
				got, ok := containerPort(c, pr.probe.HTTPGet.Port)
				if !ok || strconv.Itoa(int(got)) != want {
					t.Errorf("%s: %s probe on port %s (container port %d), but pushgate serves it on %s", p.name, pr.kind, pr.probe.HTTPGet.Port.String(), got, addr)
				}
			}

			// SIGTERM lets batches run for worker.shutdown_timeout; the
			// kubelet must not kill the process before.
			grace := int64(30)
			if spec.TerminationGracePeriodSeconds != nil {
				grace = *spec.TerminationGracePeriodSeconds
			}
			if float64(grace) <= cfg.ShutdownTimeout.Seconds() {
				t.Errorf("%s: terminationGracePeriodSeconds %d is not above worker.shutdown_timeout %s", p.name, grace, cfg.ShutdownTimeout)
			}
		}
	}
	if roles["api"] == 0 || roles["worker"] < 2 {
		t.Errorf("pods by role %v: want API pods and at least two workers", roles)
	}

	checkServices(t, m)
	checkPDBs(t, m)
	checkSecretRefs(t, refs, m)
}

// checkContainer checks the container's resources and hardening.
func checkContainer(t *testing.T, w workload, c corev1.Container) {
	t.Helper()
	where := w.String() + " " + c.Name
	req, lim := c.Resources.Requests, c.Resources.Limits
	if req.Cpu().IsZero() || req.Memory().IsZero() {
		t.Errorf("%s: no CPU and memory requests: the scheduler cannot place it", where)
	}
	if lim.Memory().IsZero() || lim.Memory().Cmp(*req.Memory()) < 0 {
		t.Errorf("%s: memory limit %s, want one at least the request %s", where, lim.Memory(), req.Memory())
	}
	if !lim.Cpu().IsZero() && lim.Cpu().Cmp(*req.Cpu()) < 0 {
		t.Errorf("%s: CPU limit %s below the request %s", where, lim.Cpu(), req.Cpu())
	}

	// The container's security context wins over the pod's.
	pod := w.template.Spec.SecurityContext
	if pod == nil {
		pod = &corev1.PodSecurityContext{}
	}
	sc := c.SecurityContext
	if sc == nil {
		sc = &corev1.SecurityContext{}
	}
	runAsNonRoot := firstSet(sc.RunAsNonRoot, pod.RunAsNonRoot)
	runAsUser := firstSet(sc.RunAsUser, pod.RunAsUser)
	seccomp := sc.SeccompProfile
	if seccomp == nil {
		seccomp = pod.SeccompProfile
	}
	switch {
	case runAsNonRoot == nil || !*runAsNonRoot:
		t.Errorf("%s: runAsNonRoot is not true", where)
	case runAsUser == nil || *runAsUser != 65532:
		t.Errorf("%s: runAsUser is not 65532, the image's nonroot", where)
	}
	if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		t.Errorf("%s: readOnlyRootFilesystem is not true", where)
	}
	if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Errorf("%s: allowPrivilegeEscalation is not false", where)
	}
	if sc.Privileged != nil && *sc.Privileged {
		t.Errorf("%s: privileged", where)
	}
	if sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") || len(sc.Capabilities.Add) > 0 {
		t.Errorf("%s: capabilities %+v, want drop ALL and nothing added", where, sc.Capabilities)
	}
	if seccomp == nil || seccomp.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("%s: seccomp profile %+v, want RuntimeDefault", where, seccomp)
	}
}

func firstSet[T any](v ...*T) *T {
	for _, p := range v {
		if p != nil {
			return p
		}
	}
	return nil
}

// checkServices checks that every Service selects pods that serve its
// ports, and that the API's Service selects the API pods alone.
func checkServices(t *testing.T, m *manifests) {
	t.Helper()
	var clientService bool
	for _, s := range m.services {
		var picked []workload
		for _, w := range m.workloads {
			if selects(t, serviceSelector(s), w) {
				picked = append(picked, w)
			}
		}
		if len(picked) == 0 {
			t.Errorf("Service %s selects no pods of the base", s.Name)
		}
		for _, w := range picked {
			for _, sp := range s.Spec.Ports {
				target := sp.TargetPort
				if target.Type == intstr.Int && target.IntVal == 0 {
					target = intstr.FromInt32(sp.Port)
				}
				if _, ok := containerPort(w.template.Spec.Containers[0], target); !ok {
					t.Errorf("Service %s port %s: %s has no container port %s", s.Name, sp.Name, w, target.String())
				}
			}
		}
		if s.Spec.ClusterIP == corev1.ClusterIPNone {
			continue
		}
		clientService = true
		for _, w := range picked {
			if w.role() != "api" {
				t.Errorf("Service %s selects %s, which runs %s: clients must reach API pods only", s.Name, w, w.role())
			}
		}
	}
	if !clientService {
		t.Error("no Service for the API")
	}
}

// checkPDBs checks that every PodDisruptionBudget covers pods of the base
// and still lets a drain take one.
func checkPDBs(t *testing.T, m *manifests) {
	t.Helper()
	covered := map[string]bool{}
	for _, p := range m.pdbs {
		var picked []workload
		for _, w := range m.workloads {
			if selects(t, p.Spec.Selector, w) {
				picked = append(picked, w)
				covered[w.String()] = true
			}
		}
		if len(picked) == 0 {
			t.Errorf("PodDisruptionBudget %s selects no pods of the base", p.Name)
			continue
		}
		var replicas int32
		for _, w := range picked {
			replicas += w.replicas
		}
		switch {
		case p.Spec.MaxUnavailable != nil:
			if n, err := intstr.GetScaledValueFromIntOrPercent(p.Spec.MaxUnavailable, int(replicas), false); err != nil || n < 1 {
				t.Errorf("PodDisruptionBudget %s: maxUnavailable %s lets no pod go: a drain would hang", p.Name, p.Spec.MaxUnavailable)
			}
		case p.Spec.MinAvailable != nil:
			if n, err := intstr.GetScaledValueFromIntOrPercent(p.Spec.MinAvailable, int(replicas), true); err != nil || int32(n) >= replicas {
				t.Errorf("PodDisruptionBudget %s: minAvailable %s of %d pods lets no pod go", p.Name, p.Spec.MinAvailable, replicas)
			}
		default:
			t.Errorf("PodDisruptionBudget %s sets neither maxUnavailable nor minAvailable", p.Name)
		}
	}
	for _, w := range m.workloads {
		if !covered[w.String()] {
			t.Errorf("%s: no PodDisruptionBudget covers it", w)
		}
	}
}

// checkSecretRefs checks that every Secret referred to is in the base or
// one the operator is told to create, with that key, optional exactly
// when the operator may leave it out; and that the documentation names
// every operator Secret and key.
func checkSecretRefs(t *testing.T, refs []secretRef, m *manifests) {
	t.Helper()
	used := map[string]bool{}
	for _, r := range refs {
		if s, ok := m.secrets[r.name]; ok {
			if _, ok := s.Data[r.key]; !ok {
				if _, ok := s.StringData[r.key]; !ok {
					t.Errorf("%s: Secret %s of the base has no key %s", r.where, r.name, r.key)
				}
			}
			continue
		}
		i := slices.IndexFunc(operatorSecrets, func(o operatorSecret) bool { return o.name == r.name })
		if i < 0 {
			t.Errorf("%s: Secret %s is neither in the base nor one the operator is told to create", r.where, r.name)
			continue
		}
		o := operatorSecrets[i]
		if !slices.Contains(o.keys, r.key) {
			t.Errorf("%s: Secret %s has no documented key %s (keys: %v)", r.where, r.name, r.key, o.keys)
		}
		if r.optional != o.optional {
			t.Errorf("%s: Secret %s optional=%v, but the operator is told it is optional=%v", r.where, r.name, r.optional, o.optional)
		}
		used[r.name+"/"+r.key] = true
	}
	kust, err := os.ReadFile(kustomizeBase + "/kustomization.yaml")
	if err != nil {
		t.Fatal(err)
	}
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range operatorSecrets {
		if !strings.Contains(string(kust), o.name) {
			t.Errorf("kustomization.yaml does not list Secret %s", o.name)
		}
		// The command that makes the Secret, with every key.
		create := regexp.MustCompile(`kubectl create secret generic ` + regexp.QuoteMeta(o.name) + `\b(?:[^\n]*\\\n)*[^\n]*`).FindString(string(readme))
		if create == "" {
			t.Errorf("README.md has no kubectl create secret generic %s", o.name)
		}
		for _, k := range o.keys {
			if !used[o.name+"/"+k] {
				t.Errorf("Secret %s key %s is documented but nothing uses it", o.name, k)
			}
			if !strings.Contains(string(kust), k) {
				t.Errorf("kustomization.yaml does not name key %s of Secret %s", k, o.name)
			}
			if create != "" && !strings.Contains(create, "--from-file="+k+"=") && !strings.Contains(create, "--from-literal="+k+"=") {
				t.Errorf("README.md: %q does not make key %s", create, k)
			}
		}
	}
}

// TestKubernetesProviderExample turns on the providers and app signing as
// the commented block at the end of pushgate.yaml shows, and checks that
// the workers then find every file it names in the Secrets they mount.
func TestKubernetesProviderExample(t *testing.T) {
	m := buildBase(t)
	var cm *corev1.ConfigMap
	for _, c := range m.configMaps {
		if _, ok := c.Data["pushgate.yaml"]; ok {
			cm = c
		}
	}
	if cm == nil {
		t.Fatal("no ConfigMap holds pushgate.yaml")
	}
	text := cm.Data["pushgate.yaml"]
	i := strings.Index(text, "\n# fcm:\n")
	if i < 0 {
		t.Fatal("pushgate.yaml has no commented provider block starting with # fcm:")
	}
	var block strings.Builder
	for line := range strings.SplitSeq(text[i+1:], "\n") {
		block.WriteString(strings.TrimPrefix(strings.TrimPrefix(line, "#"), " ") + "\n")
	}
	cm.Data["pushgate.yaml"] = text[:i+1] + block.String()

	workers := 0
	for _, w := range m.workloads {
		if w.role() != "worker" {
			continue
		}
		workers++
		p, _ := m.processOf(t, w, w.template.Spec.Containers[0])
		cfg := p.loadConfig(t)
		if cfg.FCM.ProjectID == "" || cfg.APNs.KeyFile == "" || cfg.AppSigning.Mode != "sign" {
			t.Errorf("%s: the example turns on FCM, APNs and app signing, got fcm.project_id %q, apns.key_file %q, app_signing.mode %q",
				p.name, cfg.FCM.ProjectID, cfg.APNs.KeyFile, cfg.AppSigning.Mode)
		}
	}
	if workers == 0 {
		t.Fatal("no worker in the base")
	}
}
