package steps

import (
	"bytes"
	"encoding/json"
)

// jsonMarshal encodes without HTML escaping: bodies and stdin go to programs, not browsers.
func jsonMarshal(v any) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n")), nil
}
