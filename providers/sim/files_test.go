package sim

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/sideshow/apns2/token"
	"golang.org/x/oauth2/google"
	"gopkg.in/yaml.v3"
)

func TestWriteFiles(t *testing.T) {
	s := newSim(t, Config{})
	made := s.NewDevices(50, 0.6, 1)
	dir := filepath.Join(t.TempDir(), "sim")
	f, err := s.WriteFiles(dir)
	if err != nil {
		t.Fatal(err)
	}

	var cfg struct {
		FCM struct {
			ProjectID       string `yaml:"project_id"`
			CredentialsFile string `yaml:"credentials_file"`
			Endpoint        string `yaml:"endpoint"`
			CAFile          string `yaml:"ca_file"`
		} `yaml:"fcm"`
		APNs struct {
			KeyFile string `yaml:"key_file"`
			KeyID   string `yaml:"key_id"`
			TeamID  string `yaml:"team_id"`
			Topic   string `yaml:"topic"`
			Host    string `yaml:"host"`
			CAFile  string `yaml:"ca_file"`
		} `yaml:"apns"`
	}
	raw, err := os.ReadFile(f.GatewayYAML)
	if err != nil {
		t.Fatal(err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil {
		t.Fatalf("pushgate.yaml: %v\n%s", err, raw)
	}
	abs, _ := filepath.Abs(dir)
	tests := []struct{ name, got, want string }{
		{"project_id", cfg.FCM.ProjectID, "pushgate-sim"},
		{"credentials_file", cfg.FCM.CredentialsFile, filepath.Join(abs, "fcm-service-account.json")},
		{"endpoint", cfg.FCM.Endpoint, s.FCMEndpoint()},
		{"fcm ca_file", cfg.FCM.CAFile, filepath.Join(abs, "ca.pem")},
		{"key_file", cfg.APNs.KeyFile, filepath.Join(abs, "apns-key.p8")},
		{"key_id", cfg.APNs.KeyID, "ABCDE12345"},
		{"team_id", cfg.APNs.TeamID, "TEAM123456"},
		{"topic", cfg.APNs.Topic, "org.pushgate.sim"},
		{"host", cfg.APNs.Host, s.APNsHost()},
		{"apns ca_file", cfg.APNs.CAFile, filepath.Join(abs, "ca.pem")},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("%s = %q, want %q", tt.name, tt.got, tt.want)
		}
	}

	if fi, err := os.Stat(f.APNsKey); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("apns-key.p8: %v %v", fi.Mode(), err)
	}
	if _, err := token.AuthKeyFromFile(f.APNsKey); err != nil {
		t.Fatalf("apns-key.p8: %v", err)
	}
	sa, _ := os.ReadFile(f.ServiceAccount)
	conf, err := google.JWTConfigFromJSON(sa, fcmScope)
	if err != nil || conf.TokenURL != s.TokenURL() {
		t.Fatalf("service account: %v, token_uri %q", err, conf.TokenURL)
	}
	ca, _ := os.ReadFile(f.CA)
	if string(ca) != string(s.CAPEM()) {
		t.Fatal("ca.pem differs")
	}

	var devs []Device
	b, _ := os.ReadFile(f.Devices)
	if err := json.Unmarshal(b, &devs); err != nil || !slices.Equal(devs, made) {
		t.Fatalf("devices.json: %v, %d devices, want the %d made, in order", err, len(devs), len(made))
	}
	var info SimInfo
	b, _ = os.ReadFile(f.SimJSON)
	if err := json.Unmarshal(b, &info); err != nil || info.ControlURL != s.ControlURL() || info.Files.APNsKey != f.APNsKey || info.Devices != 50 {
		t.Fatalf("sim.json: %v %+v", err, info)
	}

	// Writing again replaces the files.
	if _, err := s.WriteFiles(dir); err != nil {
		t.Fatal(err)
	}
}

func TestYAMLScalar(t *testing.T) {
	for _, give := range []string{"plain", "/a b/c", "https://h:1/v1", "a: b", "#x", "true", "123", "-x", "", "x #y", "quote\"d"} {
		var got string
		if err := yaml.Unmarshal([]byte("v: "+yamlScalar(give)), &struct{ V *string }{&got}); err != nil || got != give {
			t.Errorf("yamlScalar(%q) = %s reads back as %q (%v)", give, yamlScalar(give), got, err)
		}
	}
}
