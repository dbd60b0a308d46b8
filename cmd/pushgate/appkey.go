package main

import (
	"context"
	"fmt"
	"os"
	"strings"

	"github.com/pushgate/pushgate/signing"
	"github.com/pushgate/pushgate/signing/appsig"
)

// runAppKey is pushgate appkey: the app-signing key.
func runAppKey(ctx context.Context, e *env, args []string) error {
	return runVerb(ctx, e, "appkey", args, []verb{
		{"keygen", "ID --out FILE", "make the app-signing key: the private key into FILE, the public key on stdout", runAppKeygen},
	})
}

// runAppKeygen makes an app-signing key: the private key into a file for
// the worker processes (app_signing.key_file), the public key on stdout
// for the app's list of trusted keys.
func runAppKeygen(_ context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "appkey keygen", "ID --out FILE")
	out := fs.String("out", "", "file for the private key (PKCS #8 PEM), written with mode 0600; it must not exist (required)")
	rest, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(rest) != 1 || rest[0] == "" || strings.ContainsAny(rest[0], " \t\r\n") {
		return usagef("appkey keygen: want one key id without spaces, such as app-2026")
	}
	if *out == "" {
		return usagef("appkey keygen: --out is required")
	}
	pub, priv, err := signing.GenerateKey()
	if err != nil {
		return err
	}
	private, err := signing.MarshalPrivateKeyPEM(priv)
	if err != nil {
		return err
	}
	public := appsig.EncodePublicKey(pub)
	f, err := os.OpenFile(*out, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return usagef("appkey keygen: %v", err)
	}
	if _, err := f.Write(private); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "wrote the app-signing private key to %s: give it to the worker processes only (app_signing.key_file, app_signing.key_id: %s)\n", *out, rest[0])
	fmt.Fprintf(e.stdout, "public key, for the app's trusted keys under id %s (docs/APP-VERIFICATION.md):\n%s\n", rest[0], public)
	return nil
}
