package app

import (
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// exampleConfig is the commented configuration shipped in the repository
// and in the container image.
const exampleConfig = "../../examples/pushgate.yaml"

// commentedSetting matches a setting left at its default in the example:
// a hash directly followed by a key ("#key: value", "  #section:"). Prose
// comments have a space after the hash.
var commentedSetting = regexp.MustCompile(`(?m)^(\s*)#([a-z_]+:.*)$`)

// TestExampleConfigLoads loads examples/pushgate.yaml as shipped: with the
// control log's public key from the environment, as the file tells the
// operator to give it, it is a configuration a process starts with.
func TestExampleConfigLoads(t *testing.T) {
	if _, err := LoadConfig(exampleConfig, envOf(nil)); err != nil {
		t.Fatalf("the shipped example does not load: %v", err)
	}
	// Without the public key, it fails with the one line that says so.
	_, err := LoadConfig(exampleConfig, func(string) string { return "" })
	if err == nil || !strings.Contains(err.Error(), "control.log_public_key: required") {
		t.Fatalf("the example without a log key: err = %v, want control.log_public_key: required", err)
	}
	// The environment wins over the file, as the container relies on.
	c, err := LoadConfig(exampleConfig, envOf(map[string]string{"PUSHGATE_LISTEN": "0.0.0.0:8080"}))
	if err != nil {
		t.Fatal(err)
	}
	if c.Listen != "0.0.0.0:8080" {
		t.Fatalf("listen = %q, want the environment's 0.0.0.0:8080", c.Listen)
	}
}

// TestExampleConfigDocumentsEverySetting checks that the example names
// every setting of the table, no other, and that each commented-out
// setting shows its real default: the file cannot fall behind the binary.
func TestExampleConfigDocumentsEverySetting(t *testing.T) {
	data, err := os.ReadFile(exampleConfig)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range exampleProblems(data) {
		t.Errorf("examples/pushgate.yaml: %s", p)
	}
}

// TestExampleConfigCheckCatchesDrift shows that the check above fails on a
// file that lags behind the table: a setting missing, one that does not
// exist, a wrong default and a bad value.
func TestExampleConfigCheckCatchesDrift(t *testing.T) {
	data, err := os.ReadFile(exampleConfig)
	if err != nil {
		t.Fatal(err)
	}
	drifted := strings.Replace(string(data), "  #concurrency: 8\n", "  #concurrency: 9\n", 1)
	drifted = strings.Replace(drifted, "  #reap_margin: 5s\n", "", 1)
	drifted = strings.Replace(drifted, "#log_level: info\n", "#log_level: info\n#log_colour: auto\n", 1)
	drifted = strings.Replace(drifted, "log_format: json\n", "log_format: yaml\n", 1)
	got := exampleProblems([]byte(drifted))
	want := []string{
		`does not document worker.reap_margin`,
		`log_colour is not a setting`,
		`log_format: "yaml" is not a valid value: must be text or json, got "yaml"`,
		`worker.concurrency is commented out as "9", but its default is "8"`,
	}
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Fatalf("problems = %q\nwant       %q", got, want)
	}
}

// exampleProblems lists what is wrong with an example configuration: a
// setting it does not document, a key that is no setting, a value a
// setting refuses, a commented-out value that is not the default.
func exampleProblems(data []byte) []string {
	opts := options()
	byKey := map[string]option{}
	for _, o := range opts {
		byKey[o.key] = o
	}
	shipped := map[string]string{}
	if err := flattenYAML(data, listKeys(opts), shipped); err != nil {
		return []string{"as shipped: " + err.Error()}
	}
	everything := map[string]string{}
	if err := flattenYAML(commentedSetting.ReplaceAll(data, []byte("$1$2")), listKeys(opts), everything); err != nil {
		return []string{"with every setting uncommented: " + err.Error()}
	}
	var problems []string
	for _, o := range opts {
		if _, ok := everything[o.key]; !ok {
			problems = append(problems, "does not document "+o.key)
		}
	}
	for k, v := range everything {
		o, ok := byKey[k]
		if !ok {
			problems = append(problems, k+" is not a setting")
			continue
		}
		if err := o.set(&Config{}, v); err != nil {
			problems = append(problems, fmt.Sprintf("%s: %q is not a valid value: %v", k, v, err))
		}
		if _, active := shipped[k]; !active && o.def != "" && v != o.def {
			problems = append(problems, fmt.Sprintf("%s is commented out as %q, but its default is %q", k, v, o.def))
		}
	}
	return problems
}
