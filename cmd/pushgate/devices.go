package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"time"

	"github.com/pushgate/pushgate/api"
	"github.com/pushgate/pushgate/signing"
)

func runDevices(ctx context.Context, e *env, args []string) error {
	return runVerb(ctx, e, "devices", args, []verb{
		{"import", "FILE [--topic T] [--keyring FILE]", "register the devices of a JSON file, 10,000 per request", runDevicesImport},
	})
}

func runDevicesImport(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet(e, "devices import", `FILE [--topic T] [--keyring FILE]   (FILE: [{"platform":"fcm","token":"..."}, ...])`)
	cf := addClientFlags(fs, e)
	cf.addKeyringFlag(fs)
	topic := fs.String("topic", "", "topic the devices join (they always join all)")
	chunk := fs.Int("chunk", api.MaxTokens, "devices per request, at most 10000")
	rest, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(rest) != 1 {
		return usagef("devices import: want one FILE")
	}
	if err := refuseBlank(fs, "topic"); err != nil {
		return err
	}
	if *chunk < 1 || *chunk > api.MaxTokens {
		return usagef("devices import: --chunk must be 1 to %d", api.MaxTokens)
	}
	if *topic != "" && !api.ValidTopic(*topic) {
		return usagef("devices import: --topic %q: want 1 to 128 of A-Z a-z 0-9 _ . ~ -", *topic)
	}
	// With the keyring at hand, a topic the key may not register into is
	// refused before the file is read or a device sent.
	k, err := cf.localKey()
	if err != nil {
		return err
	}
	if err := checkRole("devices import", k, signing.RoleRegister); err != nil {
		return err
	}
	if k != nil && *topic != "" && !k.AllowsTopic(*topic) {
		return usagef("devices import: --topic %s: key %s may not register devices into it (its topics: %s)", *topic, k.ID, topicsOf(k))
	}
	devices, err := readDevices(rest[0])
	if err != nil {
		return err
	}
	var topics []string
	if *topic != "" {
		topics = []string{*topic}
	}
	c, err := cf.client()
	if err != nil {
		return err
	}
	defer c.Close()
	start := time.Now()
	imported, requests := 0, 0
	for i := 0; i < len(devices); i += *chunk {
		batch := devices[i:min(i+*chunk, len(devices))]
		req := make([]api.ImportDevice, len(batch))
		for j, d := range batch {
			req[j] = api.ImportDevice{Platform: string(d.Platform), Token: d.Token, Topics: topics}
		}
		r, err := c.ImportDevices(ctx, req)
		if err != nil {
			if imported > 0 {
				fmt.Fprintf(e.stderr, "imported %d of %d devices before the failure\n", imported, len(devices))
			}
			return err
		}
		imported += r.Imported
		requests++
	}
	into := ""
	if *topic != "" {
		into = " into topic " + *topic
	}
	fmt.Fprintf(e.stdout, "imported %d devices%s in %s (%d requests)\n", imported, into, took(time.Since(start)), requests)
	return nil
}

// readDevices reads a JSON file of [{"platform","token"}], as the
// simulator's devices.json is.
func readDevices(file string) ([]api.Device, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, usagef("read devices: %v", err)
	}
	var devices []api.Device
	if err := json.Unmarshal(data, &devices); err != nil {
		return nil, usagef("%s: want a JSON array of {\"platform\", \"token\"}: %v", file, err)
	}
	if len(devices) == 0 {
		return nil, usagef("%s lists no devices", file)
	}
	return devices, nil
}
