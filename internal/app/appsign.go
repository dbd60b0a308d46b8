package app

import (
	"os"

	"github.com/pushgate/pushgate/providers"
	"github.com/pushgate/pushgate/queue"
	"github.com/pushgate/pushgate/signing"
	"github.com/pushgate/pushgate/signing/appsig"
)

// appSigning builds the app-signing settings of a process: workers load
// the private key, an API process needs only the mode and the key id.
func (c *Config) appSigning(worker bool) (queue.AppSigning, error) {
	var mode providers.SealMode
	switch c.AppSigning.Mode {
	case "sign":
		mode = providers.SealSign
	case "require":
		mode = providers.SealRequire
	default:
		return queue.AppSigning{}, nil
	}
	a := queue.AppSigning{Mode: mode, KeyID: c.AppSigning.KeyID}
	if !worker {
		return a, nil
	}
	if c.AppSigning.KeyFile == "" {
		return a, configErrorf("config: app_signing.key_file: required by worker processes when app_signing.mode is %s", c.AppSigning.Mode)
	}
	data, err := os.ReadFile(c.AppSigning.KeyFile)
	if err != nil {
		return a, configErrorf("config: app_signing.key_file: %w", err)
	}
	key, err := signing.ParsePrivateKeyPEM(data)
	if err != nil {
		return a, configErrorf("config: app_signing.key_file %s: %w", c.AppSigning.KeyFile, err)
	}
	if a.Signer, err = appsig.NewSigner(c.AppSigning.KeyID, key); err != nil {
		return a, configErrorf("config: app_signing.key_id: %w", err)
	}
	return a, nil
}
