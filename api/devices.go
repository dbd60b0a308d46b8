package api

import "fmt"

// MaxTopicsPerDevice bounds the topics one device may subscribe to.
const MaxTopicsPerDevice = 100

// DeviceRequest is the body of PUT /v1/devices/{platform}/{token}.
type DeviceRequest struct {
	Topics []string `json:"topics"`
}

// DeviceResponse answers PUT /v1/devices/{platform}/{token}. It leaves the
// token out: the caller knows it, and answers end up in logs.
type DeviceResponse struct {
	Platform string   `json:"platform"`
	Topics   []string `json:"topics"`
}

// ImportRequest is the body of POST /v1/devices/import.
type ImportRequest struct {
	Devices []ImportDevice `json:"devices"`
}

// ImportDevice is one device of an import, with the topics it joins.
type ImportDevice struct {
	Platform string   `json:"platform"`
	Token    string   `json:"token"`
	Topics   []string `json:"topics"`
}

// Device returns the device an import entry names.
func (d ImportDevice) Device() Device { return Device{Platform: Platform(d.Platform), Token: d.Token} }

// ImportResponse answers POST /v1/devices/import.
type ImportResponse struct {
	Imported int `json:"imported"`
}

// ParseDeviceRequest decodes and validates a device registration body.
func ParseDeviceRequest(body []byte) (*DeviceRequest, error) {
	var r DeviceRequest
	if err := DecodeJSON(body, &r); err != nil {
		return nil, err
	}
	if p := topicsProblem(r.Topics); p != "" {
		return nil, Errorf(CodeInvalidTopic, "%s", p)
	}
	return &r, nil
}

// ParseImportRequest decodes and validates a device import body.
func ParseImportRequest(body []byte) (*ImportRequest, error) {
	var r ImportRequest
	if err := DecodeJSON(body, &r); err != nil {
		return nil, err
	}
	if len(r.Devices) == 0 {
		return nil, Errorf(CodeInvalidDevice, "devices is empty")
	}
	if len(r.Devices) > MaxTokens {
		return nil, Errorf(CodeTooManyTokens, "%d devices; at most %d per import", len(r.Devices), MaxTokens)
	}
	for i, d := range r.Devices {
		if p := d.Device().Invalid(); p != "" {
			return nil, Errorf(CodeInvalidDevice, "devices[%d]: %s", i, p)
		}
		if p := topicsProblem(d.Topics); p != "" {
			return nil, Errorf(CodeInvalidTopic, "devices[%d]: %s", i, p)
		}
	}
	return &r, nil
}

// topicsProblem describes what is wrong with a topic list, or returns "".
func topicsProblem(topics []string) string {
	if len(topics) > MaxTopicsPerDevice {
		return fmt.Sprintf("%d topics; at most %d", len(topics), MaxTopicsPerDevice)
	}
	for _, t := range topics {
		if !ValidTopic(t) {
			return fmt.Sprintf("topic %q must be %s", t, topicRule)
		}
	}
	return ""
}
