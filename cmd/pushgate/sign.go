package main

import (
	"context"
	"fmt"
	"io"
	"net/url"
	"os"

	"github.com/pushgate/pushgate/signing"
)

func runSign(ctx context.Context, e *env, args []string) error {
	flags := newFlagSet(e, "sign", "--key FILE --key-id ID --url URL [--method POST] [--body FILE|-] [--content-type TYPE]")
	keyFile := flags.String("key", "", "PKCS#8 PEM private key file (default $PUSHGATE_KEY, a file name or the PEM itself)")
	keyID := flags.String("key-id", "", "key id in the gateway's keyring (default $PUSHGATE_KEY_ID)")
	method := flags.String("method", "POST", "HTTP method")
	rawURL := flags.String("url", "", "full request URL, such as http://127.0.0.1:8080/v1/broadcasts (required)")
	bodyFile := flags.String("body", "", "file with the exact body to send, - for standard input (default no body)")
	contentType := flags.String("content-type", "application/json", "Content-Type the request will be sent with (signed)")
	if err := parseFlags(flags, args); err != nil {
		return err
	}
	if flags.NArg() > 0 {
		return usagef("sign: unexpected argument %q", flags.Arg(0))
	}
	if *keyFile == "" {
		*keyFile = e.getenv("PUSHGATE_KEY")
	}
	if *keyID == "" {
		*keyID = e.getenv("PUSHGATE_KEY_ID")
	}
	switch {
	case *keyFile == "":
		return usagef("sign: --key (or PUSHGATE_KEY) is required")
	case *keyID == "":
		return usagef("sign: --key-id (or PUSHGATE_KEY_ID) is required")
	case *rawURL == "":
		return usagef("sign: --url is required")
	}
	if u, err := url.Parse(*rawURL); err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return usagef("sign: --url %q: want an absolute http or https URL", *rawURL)
	}

	priv, err := readPrivateKey(*keyFile)
	if err != nil {
		return err
	}
	var body []byte
	switch *bodyFile {
	case "":
	case "-":
		if body, err = io.ReadAll(e.stdin); err != nil {
			return usagef("sign: read body from standard input: %v", err)
		}
	default:
		if body, err = os.ReadFile(*bodyFile); err != nil {
			return usagef("sign: read body: %v", err)
		}
	}

	s := &signing.Signer{KeyID: *keyID, Key: priv}
	h, err := s.Headers(*method, *rawURL, *contentType, body)
	if err != nil {
		return usagef("%v", err)
	}
	for _, name := range []string{"Content-Digest", "Signature-Input", "Signature"} {
		if v := h.Get(name); v != "" {
			fmt.Fprintf(e.stdout, "%s: %s\n", name, v)
		}
	}
	return nil
}
