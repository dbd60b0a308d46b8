package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/pushgate/pushgate/signing"
)

func runKeygen(ctx context.Context, e *env, args []string) error {
	flags := newFlagSet(e, "keygen", "--id ID --roles ROLE,... --dir DIR [--keyring FILE] [--topics T,...] [--max-audience N] [--rate N/UNIT] [--reach N/PERIOD] [--owner O]")
	id := flags.String("id", "", "key id: letters, digits, '.', '_' and '-' (required)")
	roles := flags.String("roles", "", "comma-separated roles: broadcast, register, approve, admin (required)")
	dir := flags.String("dir", "", "directory for ID.key (PKCS#8 PEM, mode 0600) and ID.pub (SPKI PEM) (required)")
	keyring := flags.String("keyring", "", "keyring file to append the entry to, created when missing")
	topics := flags.String("topics", "", "comma-separated topic patterns the key may broadcast to or register devices into (\"*\" also allows audience all; required with the broadcast role)")
	maxAudience := flags.Int("max-audience", 0, "most devices one broadcast may target (required with the broadcast role)")
	rate := flags.String("rate", "", "delivery rate for the key's broadcasts, such as 6000/min (default unlimited)")
	owner := flags.String("owner", "", "person or team holding the key; approvals count once per owner (default the id)")
	reach := flags.String("reach", "", "distinct devices the key's broadcasts may reach per rolling window, such as 200000/24h (default max-audience/24h)")
	approvalAbove := flags.Int("approval-above", 0, "audience above which the key's broadcasts wait for approvals (default the gateway's approval.above)")
	maxDevices := flags.Int("max-devices", 0, "most devices a register key may create (default unlimited)")
	if err := parseFlags(flags, args); err != nil {
		return err
	}
	if flags.NArg() > 0 {
		return usagef("keygen: unexpected argument %q", flags.Arg(0))
	}
	for _, f := range []struct{ name, value string }{{"id", *id}, {"roles", *roles}, {"dir", *dir}} {
		if err := required(flags, f.name, f.value); err != nil {
			return err
		}
	}
	if err := refuseBlank(flags, "keyring", "rate", "owner", "reach"); err != nil {
		return err
	}
	roleList, topicList := splitList(*roles), splitList(*topics)
	if len(roleList) == 0 {
		return usagef("keygen: --roles is required")
	}
	// A key with no topics may send nowhere and register devices only into
	// all: say so rather than make it.
	if given(flags, "topics") && len(topicList) == 0 {
		return usagef("keygen: --topics is empty: give topic patterns such as 'citizens,district-*' (\"*\" for every topic), or leave the flag out")
	}
	if slices.Contains(roleList, string(signing.RoleBroadcast)) {
		if len(topicList) == 0 {
			return usagef("keygen: --topics is required with the broadcast role: a broadcast key without topics can send nowhere")
		}
		if *maxAudience <= 0 {
			return usagef("keygen: --max-audience is required with the broadcast role: the most devices one broadcast may target, at least 1")
		}
	}

	pub, priv, err := signing.GenerateKey()
	if err != nil {
		return err
	}
	pubPEM, err := signing.MarshalPublicKeyPEM(pub)
	if err != nil {
		return err
	}
	privPEM, err := signing.MarshalPrivateKeyPEM(priv)
	if err != nil {
		return err
	}
	encoded, err := signing.EncodePublicKey(pub)
	if err != nil {
		return err
	}
	entry, err := marshalEntry(signing.KeyEntry{
		ID:            *id,
		PublicKey:     encoded,
		Roles:         roleList,
		Topics:        topicList,
		MaxAudience:   *maxAudience,
		Rate:          *rate,
		Owner:         *owner,
		Reach:         *reach,
		ApprovalAbove: *approvalAbove,
		MaxDevices:    *maxDevices,
	})
	if err != nil {
		return err
	}
	// The keyring parser is the one judge of a valid entry.
	if _, err := signing.ParseKeyring(append([]byte("keys:\n"), entry...)); err != nil {
		return usagef("keygen: %s", strings.TrimPrefix(err.Error(), "keyring: "))
	}

	// Everything that can be checked is checked before the first write.
	var newKeyring []byte
	if *keyring != "" {
		if newKeyring, err = appendEntry(*keyring, *id, entry); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(*dir, 0o700); err != nil {
		return usagef("keygen: %v", err)
	}
	keyFile := filepath.Join(*dir, *id+".key")
	pubFile := filepath.Join(*dir, *id+".pub")
	if err := createFile(keyFile, privPEM, 0o600); err != nil {
		return err
	}
	if err := createFile(pubFile, pubPEM, 0o644); err != nil {
		os.Remove(keyFile)
		return err
	}
	if newKeyring != nil {
		if err := replaceFile(*keyring, newKeyring); err != nil {
			os.Remove(keyFile)
			os.Remove(pubFile)
			return err
		}
	}

	fmt.Fprintf(e.stderr, "wrote %s and %s\n", keyFile, pubFile)
	if *keyring != "" {
		fmt.Fprintf(e.stderr, "added key %q to %s\n", *id, *keyring)
	}
	_, err = e.stdout.Write(entry)
	return err
}

// marshalEntry renders e as a list item indented to sit under "keys:".
func marshalEntry(e signing.KeyEntry) ([]byte, error) {
	doc, err := signing.MarshalKeyring([]signing.KeyEntry{e})
	if err != nil {
		return nil, err
	}
	return bytes.TrimPrefix(doc, []byte("keys:\n")), nil
}

// appendEntry returns the keyring file's content with entry appended, or
// a new keyring when the file does not exist or is empty. It refuses an id
// already present and any result that does not parse, such as a file whose
// keys list is not the last thing in it.
func appendEntry(file, id string, entry []byte) ([]byte, error) {
	old, err := os.ReadFile(file)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, usagef("keygen: %v", err)
	}
	if len(bytes.TrimSpace(old)) == 0 {
		return append([]byte("keys:\n"), entry...), nil
	}
	kr, err := signing.ParseKeyring(old)
	if err != nil {
		return nil, usagef("keygen: %s: %v", file, err)
	}
	if _, dup := kr.Lookup(id); dup {
		return nil, usagef("keygen: %s already has a key %q", file, id)
	}
	next := bytes.Clone(old)
	if !bytes.HasSuffix(next, []byte("\n")) {
		next = append(next, '\n')
	}
	next = append(next, entry...)
	nkr, err := signing.ParseKeyring(next)
	if err != nil || len(nkr.Keys()) != len(kr.Keys())+1 {
		return nil, usagef("keygen: %s: cannot append to it; its keys list must be a block list at the end of the file", file)
	}
	if _, ok := nkr.Lookup(id); !ok {
		return nil, usagef("keygen: %s: cannot append to it; its keys list must be a block list at the end of the file", file)
	}
	return next, nil
}

// createFile writes a new file and never replaces one; on failure it
// leaves nothing behind.
func createFile(name string, data []byte, perm os.FileMode) error {
	f, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if errors.Is(err, fs.ErrExist) {
		return usagef("keygen: %s already exists; not overwriting it", name)
	}
	if err != nil {
		return usagef("keygen: %v", err)
	}
	_, err = f.Write(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(name)
		return fmt.Errorf("keygen: write %s: %w", name, err)
	}
	return nil
}

// replaceFile writes data to name through a temporary file and a rename,
// so that readers (a gateway reloading on SIGHUP) never see half a file.
func replaceFile(name string, data []byte) error {
	perm := os.FileMode(0o644)
	if fi, err := os.Stat(name); err == nil {
		perm = fi.Mode().Perm()
	}
	tmp, err := os.CreateTemp(filepath.Dir(name), "."+filepath.Base(name)+".*")
	if err != nil {
		return fmt.Errorf("keygen: %w", err)
	}
	defer os.Remove(tmp.Name()) // after a successful rename this finds nothing
	_, err = tmp.Write(data)
	if err == nil {
		err = tmp.Chmod(perm)
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), name)
	}
	if err != nil {
		return fmt.Errorf("keygen: write %s: %w", name, err)
	}
	return nil
}

// given reports whether the flag name was on the command line.
func given(fs *flag.FlagSet, name string) bool {
	found := false
	fs.Visit(func(f *flag.Flag) { found = found || f.Name == name })
	return found
}

// splitList splits a comma-separated flag value, dropping empty items.
func splitList(s string) []string {
	var out []string
	for _, item := range strings.Split(s, ",") {
		if item = strings.TrimSpace(item); item != "" {
			out = append(out, item)
		}
	}
	return out
}
