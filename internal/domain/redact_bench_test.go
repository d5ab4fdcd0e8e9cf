package domain

import (
	"fmt"
	"strings"
	"testing"
)

// BenchmarkRedactor measures redacting a 64 KiB JSON document (a large recorded response)
// with ten secrets and their encoded forms, none of which occurs: the common case.
func BenchmarkRedactor(b *testing.B) {
	var secrets []string
	for i := 0; i < 10; i++ {
		secrets = append(secrets, fmt.Sprintf("secret-%d-Zq8Wm2Xv7Rt4Yp9Hs6", i))
	}
	r := NewRedactor(secrets)
	doc := []byte(`{"items":[` + strings.Repeat(`{"id":12345,"name":"an ordinary item name","tags":["a","b"]},`, 1100) + `{}]}`)
	b.SetBytes(int64(len(doc)))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		r.JSON(doc)
	}
}
