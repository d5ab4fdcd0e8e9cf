package server_test

import (
	"sort"
	"strings"
	"testing"

	"github.com/pipectl/pipectl/internal/server"
)

// The OpenAPI document and the mux agree: every route is documented, nothing documented is
// missing, and every route behind a token documents the token and its refusals.
func TestOpenAPICoversEveryRoute(t *testing.T) {
	b := setup(t, "sqlite:"+t.TempDir()+"/l.db", options{})
	code, body := b.do("GET", "/api/v1/openapi.json", "", "")
	if code != 200 {
		t.Fatalf("%d %s", code, body)
	}
	var doc struct {
		OpenAPI string `json:"openapi"`
		Paths   map[string]map[string]struct {
			Security  []map[string][]string       `json:"security"`
			Responses map[string]any              `json:"responses"`
			Params    []struct{ Name, In string } `json:"parameters"`
		} `json:"paths"`
	}
	decodeJSON(t, body, &doc)
	if doc.OpenAPI != "3.1.0" {
		t.Fatalf("openapi %q", doc.OpenAPI)
	}
	var documented []string
	for path, ops := range doc.Paths {
		for method, op := range ops {
			route := strings.ToUpper(method) + " " + path
			documented = append(documented, route)
			public := path == "/healthz" || path == "/readyz" || path == "/metrics" || path == "/api/v1/openapi.json" || strings.HasPrefix(path, "/hooks/")
			if !public {
				if len(op.Security) == 0 || op.Security[0]["bearer"] == nil || op.Responses["401"] == nil || op.Responses["403"] == nil {
					t.Errorf("%s does not document its token and refusals", route)
				}
			}
			// Every {param} of the path is declared.
			for _, seg := range strings.Split(path, "/") {
				if strings.HasPrefix(seg, "{") {
					found := false
					for _, p := range op.Params {
						found = found || (p.In == "path" && "{"+p.Name+"}" == seg)
					}
					if !found {
						t.Errorf("%s does not declare %s", route, seg)
					}
				}
			}
		}
	}
	sort.Strings(documented)
	routes := b.srv.Routes()
	if strings.Join(documented, "\n") != strings.Join(routes, "\n") {
		t.Fatalf("documented:\n%s\nserved:\n%s", strings.Join(documented, "\n"), strings.Join(routes, "\n"))
	}
	// And each served route answers something other than the mux's 404 or 405.
	for _, r := range routes {
		method, path, _ := strings.Cut(r, " ")
		path = strings.NewReplacer("{name}", "orders", "{id}", "nosuch").Replace(path)
		if strings.HasSuffix(path, "/events") {
			continue // a stream; TestEventsFollowARunningRun reads it
		}
		code, body := b.do(method, path, server.RoleAdmin, "{}")
		if code == 405 || (code == 404 && !strings.Contains(string(body), "nosuch") && !strings.Contains(string(body), "webhook")) {
			t.Errorf("%s: %d %s", r, code, body)
		}
	}
}
