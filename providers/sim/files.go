package sim

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Files names the files WriteFiles wrote, by absolute path.
type Files struct {
	Dir            string `json:"dir"`
	CA             string `json:"ca_file"`
	ServiceAccount string `json:"fcm_credentials_file"`
	APNsKey        string `json:"apns_key_file"`
	Devices        string `json:"devices_file"`
	SimJSON        string `json:"sim_file"`
	GatewayYAML    string `json:"gateway_config_file"`
}

// SimInfo is the content of sim.json: where everything is.
type SimInfo struct {
	FCMEndpoint string `json:"fcm_endpoint"`
	TokenURL    string `json:"token_url"`
	APNsHost    string `json:"apns_host"`
	ControlURL  string `json:"control_url"`
	ProjectID   string `json:"project_id"`
	ClientEmail string `json:"client_email"`
	Topic       string `json:"apns_topic"`
	KeyID       string `json:"apns_key_id"`
	TeamID      string `json:"apns_team_id"`
	Devices     int    `json:"devices"`
	Files       Files  `json:"files"`
}

// WriteFiles writes into dir (creating it) what a gateway or a benchmark
// needs to use the simulators:
//
//	ca.pem                     the certificate authority to trust
//	fcm-service-account.json   service-account key; token_uri is the simulator
//	apns-key.p8                APNs signing key (mode 0600)
//	devices.json               [{"platform":"fcm","token":"..."}, ...]
//	sim.json                   URLs, identifiers and these paths (SimInfo)
//	pushgate.yaml              the senders' part of a gateway configuration
func (s *Sim) WriteFiles(dir string) (Files, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return Files{}, fmt.Errorf("sim files: %w", err)
	}
	if err := os.MkdirAll(abs, 0o755); err != nil {
		return Files{}, fmt.Errorf("sim files: %w", err)
	}
	f := Files{
		Dir:            abs,
		CA:             filepath.Join(abs, "ca.pem"),
		ServiceAccount: filepath.Join(abs, "fcm-service-account.json"),
		APNsKey:        filepath.Join(abs, "apns-key.p8"),
		Devices:        filepath.Join(abs, "devices.json"),
		SimJSON:        filepath.Join(abs, "sim.json"),
		GatewayYAML:    filepath.Join(abs, "pushgate.yaml"),
	}
	devices := s.Devices()
	devJSON, err := json.Marshal(devices)
	if err != nil {
		return Files{}, fmt.Errorf("sim files: %w", err)
	}
	info := SimInfo{
		FCMEndpoint: s.FCMEndpoint(), TokenURL: s.TokenURL(), APNsHost: s.APNsHost(), ControlURL: s.ControlURL(),
		ProjectID: s.cfg.ProjectID, ClientEmail: s.serviceAccountEmail(),
		Topic: s.cfg.Topic, KeyID: s.cfg.KeyID, TeamID: s.cfg.TeamID,
		Devices: len(devices), Files: f,
	}
	infoJSON, err := json.MarshalIndent(info, "", "  ")
	if err != nil {
		return Files{}, fmt.Errorf("sim files: %w", err)
	}
	writes := []struct {
		path string
		data []byte
		mode os.FileMode
	}{
		{f.CA, s.creds.caPEM, 0o644},
		{f.ServiceAccount, s.ServiceAccountJSON(), 0o600},
		{f.APNsKey, s.creds.apnsKeyPEM, 0o600},
		{f.Devices, append(devJSON, '\n'), 0o644},
		{f.SimJSON, append(infoJSON, '\n'), 0o644},
		{f.GatewayYAML, []byte(s.gatewayYAML(f)), 0o644},
	}
	for _, w := range writes {
		if err := writeFile(w.path, w.data, w.mode); err != nil {
			return Files{}, fmt.Errorf("sim files: %w", err)
		}
	}
	return f, nil
}

// writeFile replaces path atomically, so that a reader never sees half a
// key, and sets the mode even when the file existed.
func writeFile(path string, data []byte, mode os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// gatewayYAML is the senders' part of a gateway configuration.
func (s *Sim) gatewayYAML(f Files) string {
	var b strings.Builder
	b.WriteString("# Senders pointed at the pushgate simulators. Add redis_url and keyring_file to run a gateway.\n")
	b.WriteString("fcm:\n")
	fmt.Fprintf(&b, "  project_id: %s\n", yamlScalar(s.cfg.ProjectID))
	fmt.Fprintf(&b, "  credentials_file: %s\n", yamlScalar(f.ServiceAccount))
	fmt.Fprintf(&b, "  endpoint: %s\n", yamlScalar(s.FCMEndpoint()))
	fmt.Fprintf(&b, "  ca_file: %s\n", yamlScalar(f.CA))
	b.WriteString("apns:\n")
	fmt.Fprintf(&b, "  key_file: %s\n", yamlScalar(f.APNsKey))
	fmt.Fprintf(&b, "  key_id: %s\n", yamlQuoted(s.cfg.KeyID))
	fmt.Fprintf(&b, "  team_id: %s\n", yamlQuoted(s.cfg.TeamID))
	fmt.Fprintf(&b, "  topic: %s\n", yamlScalar(s.cfg.Topic))
	fmt.Fprintf(&b, "  host: %s\n", yamlScalar(s.APNsHost()))
	fmt.Fprintf(&b, "  ca_file: %s\n", yamlScalar(f.CA))
	return b.String()
}

// yamlScalar writes v plain when YAML reads it back as the same string,
// and double-quoted otherwise.
func yamlScalar(v string) string {
	plain := v != "" && !strings.ContainsAny(v[:1], "!&*-?{}[],#|>@`\"'%: ") &&
		!strings.Contains(v, ": ") && !strings.Contains(v, " #") &&
		!strings.HasSuffix(v, ":") && !strings.HasSuffix(v, " ") &&
		!strings.ContainsAny(v, "\n\t\\\"") &&
		!strings.ContainsAny(v[:1], "0123456789") &&
		!isYAMLKeyword(v)
	if plain {
		return v
	}
	return yamlQuoted(v)
}

// yamlQuoted writes v double-quoted; JSON strings are valid YAML.
func yamlQuoted(v string) string {
	b, _ := json.Marshal(v)
	return string(b)
}

func isYAMLKeyword(v string) bool {
	switch strings.ToLower(v) {
	case "true", "false", "yes", "no", "on", "off", "null", "~", "y", "n":
		return true
	}
	return false
}
