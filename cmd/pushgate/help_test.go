package main

import (
	"bytes"
	"context"
	"slices"
	"strings"
	"testing"
)

// runQuiet runs pushgate with no environment, as exitCode reports it.
func runQuiet(args ...string) clientRun {
	var out, errOut bytes.Buffer
	err := run(context.Background(), args, noEnv, strings.NewReader(""), &out, &errOut)
	code := exitCode(err, &errOut)
	return clientRun{stdout: out.String(), stderr: errOut.String(), code: code}
}

// verbsOf reads the verbs a command's usage lists ("Verbs:" lines of
// "  CMD VERB ..."); none for a command without verbs.
func verbsOf(name, usage string) []string {
	_, list, ok := strings.Cut(usage, "\nVerbs:\n")
	if !ok {
		return nil
	}
	var verbs []string
	for line := range strings.Lines(list) {
		f := strings.Fields(line)
		if len(f) < 2 || f[0] != name {
			break
		}
		verbs = append(verbs, f[1])
	}
	return verbs
}

// TestHelpAndFlagErrors runs every subcommand, and every verb of those
// that have verbs, with --help, -h and through pushgate help: the usage on
// stdout, nothing on stderr, exit 0. An unknown flag is one line on
// stderr that points at --help, exit 2, and no usage anywhere.
func TestHelpAndFlagErrors(t *testing.T) {
	type invocation struct {
		name string   // as in "Usage: pushgate NAME" and "see pushgate NAME --help"
		args []string // the words before the flags
	}
	var all []invocation
	for _, c := range commands() {
		all = append(all, invocation{c.name, []string{c.name}})
		r := runQuiet(c.name, "--help")
		for _, v := range verbsOf(c.name, r.stdout) {
			all = append(all, invocation{c.name + " " + v, []string{c.name, v}})
		}
	}
	all = append(all, invocation{"audit verify", []string{"audit", "verify"}})
	var names []string
	for _, in := range all {
		names = append(names, in.name)
	}
	for _, want := range []string{"keys list", "keys revoke", "broadcasts list", "kills list", "approvals list", "devices import",
		"log keygen", "log export", "log restore", "redis status", "redis restore-marker", "redis accept-loss", "appkey keygen"} {
		if !slices.Contains(names, want) {
			t.Errorf("the usage of %s lists no verb %s", strings.Fields(want)[0], want)
		}
	}

	for _, in := range all {
		t.Run(in.name, func(t *testing.T) {
			wantUsage := "Usage: pushgate " + in.name
			if in.name == "help" {
				wantUsage = "Usage: pushgate <subcommand>"
			}
			help := [][]string{
				append(append([]string{}, in.args...), "--help"),
				append(append([]string{}, in.args...), "-h"),
				append([]string{"help"}, in.args...),
			}
			for _, args := range help {
				r := runQuiet(args...)
				if r.code != 0 || r.stderr != "" || !strings.Contains(r.stdout, wantUsage) {
					t.Errorf("pushgate %s: exit %d, stderr %q, stdout:\n%s\nwant exit 0, nothing on stderr and %q on stdout",
						strings.Join(args, " "), r.code, r.stderr, r.stdout, wantUsage)
				}
			}
			for _, bad := range [][]string{{"--no-such-flag"}, {"-no-such-flag", "x"}} {
				args := append(append([]string{}, in.args...), bad...)
				r := runQuiet(args...)
				want := "pushgate: " + in.name + ": flag provided but not defined: -no-such-flag (see pushgate " + in.name + " --help)\n"
				if r.code != 2 || r.stderr != want || r.stdout != "" {
					t.Errorf("pushgate %s: exit %d, stdout %q, stderr %q; want exit 2 and only %q",
						strings.Join(args, " "), r.code, r.stdout, r.stderr, want)
				}
			}
		})
	}
}

// TestTopLevelHelp prints the subcommands to stdout however help is asked
// for, and names the new lookups.
func TestTopLevelHelp(t *testing.T) {
	for _, args := range [][]string{{"help"}, {"help", "--help"}, {"help", "-h"}, {"--help"}, {"-h"}, {"help", "help"}} {
		r := runQuiet(args...)
		if r.code != 0 || r.stderr != "" || !strings.Contains(r.stdout, "Usage: pushgate <subcommand> [flags]") {
			t.Errorf("pushgate %s: exit %d, stderr %q, stdout:\n%s", strings.Join(args, " "), r.code, r.stderr, r.stdout)
		}
		for _, want := range []string{"broadcasts list", "kills list", "keys list", "keys revoke ID"} {
			if !strings.Contains(r.stdout, want) {
				t.Errorf("pushgate %s does not mention %q", strings.Join(args, " "), want)
			}
		}
	}
}

// TestBadFlagValuesAreOneLine refuses a flag given a bad value, or none,
// with one line and exit 2.
func TestBadFlagValuesAreOneLine(t *testing.T) {
	tests := []struct {
		give []string
		want string
	}{
		{[]string{"broadcasts", "list", "--limit", "many"}, `pushgate: broadcasts list: invalid value "many" for flag -limit: parse error (see pushgate broadcasts list --help)` + "\n"},
		{[]string{"broadcasts", "list", "--limit", "0"}, "pushgate: broadcasts list: --limit must be 1 to 10000\n"},
		{[]string{"kills", "list", "--json=maybe"}, `pushgate: kills list: invalid boolean value "maybe" for -json: parse error (see pushgate kills list --help)` + "\n"},
		{[]string{"send", "--body"}, "pushgate: send: flag needs an argument: -body (see pushgate send --help)\n"},
		{[]string{"send", "--data", "novalue", "--body", "b"}, `pushgate: send: invalid value "novalue" for flag -data: want KEY=VALUE, got "novalue" (see pushgate send --help)` + "\n"},
		{[]string{"keys"}, "pushgate: keys: no verb given: want list or revoke (see pushgate keys --help)\n"},
		{[]string{"kills", "show"}, `pushgate: kills: unknown verb "show": want list (see pushgate kills --help)` + "\n"},
		{[]string{"help", "nosuch"}, `pushgate: help: unknown subcommand "nosuch" (run pushgate help)` + "\n"},
	}
	for _, tt := range tests {
		r := runQuiet(tt.give...)
		if r.code != 2 || r.stderr != tt.want || r.stdout != "" {
			t.Errorf("pushgate %s: exit %d, stdout %q, stderr %q; want 2 and %q", strings.Join(tt.give, " "), r.code, r.stdout, r.stderr, tt.want)
		}
	}
}
