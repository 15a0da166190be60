package deploy

import (
	"bytes"
	"errors"
	"io"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// The ports of a node: the public listener, the ops listener and the
// embedded NATS server's client and route ports.
const (
	httpPort    = 8080
	opsPort     = 9000
	natsPort    = 4222
	clusterPort = 6222
)

type composeFile struct {
	Services map[string]struct {
		Build       any               `yaml:"build"`
		Image       string            `yaml:"image"`
		Profiles    []string          `yaml:"profiles"`
		Environment map[string]string `yaml:"environment"`
		Ports       []string          `yaml:"ports"`
		Volumes     []string          `yaml:"volumes"`
	} `yaml:"services"`
}

// TestCompose checks deploy/compose.yaml: three nodes that route to each
// other with R3 buckets, each publishing only its public port; the ops
// port and NATS stay inside the compose network.
func TestCompose(t *testing.T) {
	b, err := os.ReadFile("compose.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var c composeFile
	if err := yaml.Unmarshal(b, &c); err != nil {
		t.Fatal(err)
	}
	var nodes []string
	for name, s := range c.Services {
		if len(s.Profiles) == 0 {
			nodes = append(nodes, name)
		}
	}
	slices.Sort(nodes)
	if !slices.Equal(nodes, []string{"node-1", "node-2", "node-3"}) {
		t.Fatalf("nodes %v, want node-1..3", nodes)
	}
	hostPorts := map[string]bool{}
	for _, name := range nodes {
		s := c.Services[name]
		env := s.Environment
		if s.Build == nil || s.Image == "" {
			t.Errorf("%s: wants build and image", name)
		}
		if env["RATETHROTTLE_NODE_ID"] != name {
			t.Errorf("%s: node ID %q", name, env["RATETHROTTLE_NODE_ID"])
		}
		if env["RATETHROTTLE_NATS_URL"] != "" {
			t.Errorf("%s: RATETHROTTLE_NATS_URL would replace the embedded NATS server", name)
		}
		if env["RATETHROTTLE_KV_REPLICAS"] != "3" || env["RATETHROTTLE_CLUSTER_LISTEN"] != "0.0.0.0:6222" {
			t.Errorf("%s: replicas %q, cluster listen %q", name, env["RATETHROTTLE_KV_REPLICAS"], env["RATETHROTTLE_CLUSTER_LISTEN"])
		}
		for _, other := range nodes {
			if !strings.Contains(env["RATETHROTTLE_CLUSTER_ROUTES"], "nats-route://"+other+":6222") {
				t.Errorf("%s: no route to %s in %q", name, other, env["RATETHROTTLE_CLUSTER_ROUTES"])
			}
		}
		if env["RATETHROTTLE_OPS_LISTEN"] != "0.0.0.0:9000" {
			t.Errorf("%s: ops listen %q, want 0.0.0.0:9000 inside the network", name, env["RATETHROTTLE_OPS_LISTEN"])
		}
		if len(s.Ports) != 1 {
			t.Errorf("%s: ports %v, want the public port only", name, s.Ports)
		}
		for _, p := range s.Ports {
			parts := strings.Split(p, ":")
			if parts[len(parts)-1] != "8080" {
				t.Errorf("%s: publishes %q; only the public port 8080 may be published", name, p)
			}
			if hostPorts[parts[0]] {
				t.Errorf("%s: host port %s twice", name, parts[0])
			}
			hostPorts[parts[0]] = true
		}
		if len(s.Volumes) != 1 || !strings.HasSuffix(s.Volumes[0], ":/data") {
			t.Errorf("%s: volumes %v, want one on /data", name, s.Volumes)
		}
	}
	// The monitoring profile's Prometheus loads the alert rules and
	// scrapes the ops ports.
	prom, err := os.ReadFile("prometheus/prometheus.yml")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"alerts.yml", `"node-1:9000", "node-2:9000", "node-3:9000"`, "job_name: ratethrottle"} {
		if !bytes.Contains(prom, []byte(want)) {
			t.Errorf("prometheus.yml lacks %s", want)
		}
	}
}

// k8sObject is the part of a Kubernetes object the test reads.
type k8sObject struct {
	Kind     string `yaml:"kind"`
	Metadata struct {
		Name string `yaml:"name"`
	} `yaml:"metadata"`
	Spec struct {
		// Service
		ClusterIP                string `yaml:"clusterIP"`
		PublishNotReadyAddresses bool   `yaml:"publishNotReadyAddresses"`
		// A Service's selector is labels; a StatefulSet's holds matchLabels.
		Selector map[string]any `yaml:"selector"`
		Ports    []struct {
			Name       string `yaml:"name"`
			Port       int    `yaml:"port"`
			TargetPort any    `yaml:"targetPort"`
		} `yaml:"ports"`
		// StatefulSet
		ServiceName string `yaml:"serviceName"`
		Replicas    int    `yaml:"replicas"`
		Template    struct {
			Metadata struct {
				Labels      map[string]string `yaml:"labels"`
				Annotations map[string]string `yaml:"annotations"`
			} `yaml:"metadata"`
			Spec struct {
				SecurityContext struct {
					RunAsNonRoot bool `yaml:"runAsNonRoot"`
					RunAsUser    int  `yaml:"runAsUser"`
				} `yaml:"securityContext"`
				Containers []container `yaml:"containers"`
			} `yaml:"spec"`
		} `yaml:"template"`
		VolumeClaimTemplates []struct {
			Metadata struct {
				Name string `yaml:"name"`
			} `yaml:"metadata"`
		} `yaml:"volumeClaimTemplates"`
	} `yaml:"spec"`
}

type probe struct {
	HTTPGet *struct {
		Path string `yaml:"path"`
		Port any    `yaml:"port"`
	} `yaml:"httpGet"`
}

type container struct {
	Name  string `yaml:"name"`
	Image string `yaml:"image"`
	Env   []struct {
		Name  string `yaml:"name"`
		Value string `yaml:"value"`
	} `yaml:"env"`
	Ports []struct {
		Name          string `yaml:"name"`
		ContainerPort int    `yaml:"containerPort"`
	} `yaml:"ports"`
	ReadinessProbe  *probe `yaml:"readinessProbe"`
	LivenessProbe   *probe `yaml:"livenessProbe"`
	SecurityContext struct {
		AllowPrivilegeEscalation *bool `yaml:"allowPrivilegeEscalation"`
		ReadOnlyRootFilesystem   bool  `yaml:"readOnlyRootFilesystem"`
	} `yaml:"securityContext"`
	VolumeMounts []struct {
		Name      string `yaml:"name"`
		MountPath string `yaml:"mountPath"`
	} `yaml:"volumeMounts"`
}

func readK8s(t *testing.T, path string) []k8sObject {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	dec := yaml.NewDecoder(f)
	var objs []k8sObject
	for {
		var o k8sObject
		err := dec.Decode(&o)
		if errors.Is(err, io.EOF) {
			return objs
		}
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		objs = append(objs, o)
	}
}

// TestKubernetes checks deploy/kubernetes: a StatefulSet of three whose
// pods route to each other through its headless Service, readiness on
// /readyz, and no Service that exposes the ops port.
func TestKubernetes(t *testing.T) {
	objs := readK8s(t, "kubernetes/ratethrottle.yaml")
	services := map[string]k8sObject{}
	var sts *k8sObject
	for i, o := range objs {
		switch o.Kind {
		case "Service":
			services[o.Metadata.Name] = o
		case "StatefulSet":
			sts = &objs[i]
		}
	}
	if sts == nil {
		t.Fatal("no StatefulSet")
	}
	if sts.Spec.Replicas != 3 {
		t.Errorf("replicas %d, want 3", sts.Spec.Replicas)
	}
	headless, ok := services[sts.Spec.ServiceName]
	if !ok || headless.Spec.ClusterIP != "None" || !headless.Spec.PublishNotReadyAddresses {
		t.Errorf("serviceName %q: want a headless Service (clusterIP None) that publishes not-ready pods: %+v", sts.Spec.ServiceName, headless.Spec)
	}
	podLabels := sts.Spec.Template.Metadata.Labels
	var public bool
	for name, s := range services {
		for k, v := range s.Spec.Selector {
			if podLabels[k] != v.(string) {
				t.Errorf("Service %s selects %s=%s, which the pods lack", name, k, v)
			}
		}
		for _, p := range s.Spec.Ports {
			if p.Port == opsPort || p.TargetPort == opsPort || p.TargetPort == "ops" || p.Name == "ops" {
				t.Errorf("Service %s exposes the ops port: %+v", name, p)
			}
			if p.TargetPort == "http" && s.Spec.ClusterIP != "None" {
				public = true
			}
		}
	}
	if !public {
		t.Error("no Service routes to the pods' public port")
	}
	if len(sts.Spec.Template.Spec.Containers) != 1 {
		t.Fatalf("containers: %d", len(sts.Spec.Template.Spec.Containers))
	}
	c := sts.Spec.Template.Spec.Containers[0]
	ports := map[string]int{}
	for _, p := range c.Ports {
		ports[p.Name] = p.ContainerPort
	}
	want := map[string]int{"http": httpPort, "ops": opsPort, "nats": natsPort, "cluster": clusterPort}
	for name, port := range want {
		if ports[name] != port {
			t.Errorf("container port %s = %d, want %d", name, ports[name], port)
		}
	}
	if p := c.ReadinessProbe; p == nil || p.HTTPGet == nil || p.HTTPGet.Path != "/readyz" || p.HTTPGet.Port != "http" {
		t.Errorf("readiness probe %+v, want GET /readyz on http", p)
	}
	if p := c.LivenessProbe; p == nil || p.HTTPGet == nil || p.HTTPGet.Path != "/healthz" || p.HTTPGet.Port != "http" {
		t.Errorf("liveness probe %+v, want GET /healthz on http", p)
	}
	env := map[string]string{}
	for _, e := range c.Env {
		env[e.Name] = e.Value
	}
	for i := range sts.Spec.Replicas {
		route := "nats-route://" + sts.Metadata.Name + "-" + string(rune('0'+i)) + "." + sts.Spec.ServiceName + ":6222"
		if !strings.Contains(env["RATETHROTTLE_CLUSTER_ROUTES"], route) {
			t.Errorf("routes %q lack %s", env["RATETHROTTLE_CLUSTER_ROUTES"], route)
		}
	}
	if env["RATETHROTTLE_KV_REPLICAS"] != "3" || env["RATETHROTTLE_NODE_ID"] != "$(POD_NAME)" || env["RATETHROTTLE_OPS_LISTEN"] != "0.0.0.0:9000" {
		t.Errorf("env %v", env)
	}
	if env["RATETHROTTLE_NATS_URL"] != "" {
		t.Error("RATETHROTTLE_NATS_URL would replace the embedded NATS server")
	}
	sc := sts.Spec.Template.Spec.SecurityContext
	if !sc.RunAsNonRoot || sc.RunAsUser == 0 || c.SecurityContext.AllowPrivilegeEscalation == nil || *c.SecurityContext.AllowPrivilegeEscalation ||
		!c.SecurityContext.ReadOnlyRootFilesystem {
		t.Errorf("security context: pod %+v, container %+v", sc, c.SecurityContext)
	}
	if len(sts.Spec.VolumeClaimTemplates) != 1 || len(c.VolumeMounts) != 1 || c.VolumeMounts[0].MountPath != "/data" ||
		c.VolumeMounts[0].Name != sts.Spec.VolumeClaimTemplates[0].Metadata.Name {
		t.Errorf("data volume: claims %+v, mounts %+v", sts.Spec.VolumeClaimTemplates, c.VolumeMounts)
	}
	if a := sts.Spec.Template.Metadata.Annotations; a["prometheus.io/port"] != "9000" || a["prometheus.io/path"] != "/metrics" {
		t.Errorf("scrape annotations %v", a)
	}
}

// TestDockerfile checks the image recipe: a static build, a final stage
// on scratch, a non-root user and a HEALTHCHECK that runs the probe
// binary the image holds.
func TestDockerfile(t *testing.T) {
	b, err := os.ReadFile("../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	var lines []string // instructions, continuation lines joined
	cur := ""
	for _, l := range strings.Split(string(b), "\n") {
		l = strings.TrimSpace(l)
		if cur == "" && (l == "" || strings.HasPrefix(l, "#")) {
			continue
		}
		if strings.HasSuffix(l, "\\") {
			cur += strings.TrimSuffix(l, "\\") + " "
			continue
		}
		lines = append(lines, cur+l)
		cur = ""
	}
	var froms []string
	lastFrom := -1
	for i, l := range lines {
		if strings.HasPrefix(l, "FROM ") {
			froms = append(froms, l)
			lastFrom = i
		}
	}
	if len(froms) < 2 || froms[len(froms)-1] != "FROM scratch" {
		t.Fatalf("stages %q: want a multi-stage build ending FROM scratch", froms)
	}
	all := strings.Join(lines, "\n")
	if !strings.Contains(all, "CGO_ENABLED=0") {
		t.Error("the build is not static (CGO_ENABLED=0)")
	}
	final := lines[lastFrom:]
	var user, health, entry string
	for _, l := range final {
		switch {
		case strings.HasPrefix(l, "USER "):
			user = strings.TrimPrefix(l, "USER ")
		case strings.HasPrefix(l, "HEALTHCHECK "):
			health = l
		case strings.HasPrefix(l, "ENTRYPOINT "):
			entry = l
		}
	}
	if user == "" || regexp.MustCompile(`^(0|root)(:|$)`).MatchString(user) {
		t.Errorf("final stage user %q: want a non-root user", user)
	}
	if !strings.Contains(health, `CMD ["/usr/local/bin/healthcheck"`) {
		t.Errorf("HEALTHCHECK %q: want the healthcheck binary (scratch has no shell or curl)", health)
	}
	if !strings.Contains(entry, "/usr/local/bin/ratethrottle-node") {
		t.Errorf("ENTRYPOINT %q", entry)
	}
	for _, bin := range []string{"ratethrottle-node", "ratethrottle", "healthcheck"} {
		if !strings.Contains(all, "/out/"+bin) {
			t.Errorf("the image lacks %s", bin)
		}
	}
}
