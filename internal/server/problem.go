package server

import (
	"encoding/json"
	"errors"
	"net/http"

	"github.com/pipectl/pipectl/internal/operate"
)

// problemDoc is an RFC 9457 problem document.
type problemDoc struct {
	Type      string `json:"type"`
	Title     string `json:"title"`
	Status    int    `json:"status"`
	Detail    string `json:"detail"`
	Instance  string `json:"instance,omitempty"`
	RequestID string `json:"request_id,omitempty"`
	// Errors lists the input's schema violations (422).
	Errors any `json:"errors,omitempty"`
}

// problem writes an application/problem+json answer. The type names the class of problem;
// the detail carries the words the CLI prints.
func (s *Server) problem(w http.ResponseWriter, r *http.Request, status int, kind, detail string, errs any) {
	w.Header().Set("Content-Type", "application/problem+json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(problemDoc{Type: "https://pipectl.dev/problems/" + kind, Title: http.StatusText(status), Status: status,
		Detail: detail, Instance: r.URL.Path, RequestID: requestID(r), Errors: errs})
}

// fail answers an operation's error with the status its kind maps to.
func (s *Server) fail(w http.ResponseWriter, r *http.Request, err error) {
	var ie *operate.InputError
	switch operate.KindOf(err) {
	case operate.KindNotFound:
		s.problem(w, r, http.StatusNotFound, "not-found", err.Error(), nil)
	case operate.KindInvalid:
		s.problem(w, r, http.StatusBadRequest, "invalid", err.Error(), nil)
	case operate.KindRefused:
		s.problem(w, r, http.StatusConflict, "refused", err.Error(), nil)
	case operate.KindConflict:
		s.problem(w, r, http.StatusConflict, "idempotency-conflict", err.Error(), nil)
	case operate.KindDisabled:
		s.problem(w, r, http.StatusLocked, "disabled", err.Error(), nil)
	case operate.KindForbidden:
		s.problem(w, r, http.StatusForbidden, "forbidden", err.Error(), nil)
	case operate.KindInputSchema:
		var errs any
		if errors.As(err, &ie) {
			errs = ie.Reasons
		}
		s.problem(w, r, http.StatusUnprocessableEntity, "input-schema", err.Error(), errs)
	default:
		// The cause goes to the log, tied to the request id; the caller learns only that.
		s.log.Error("operation failed", "request_id", requestID(r), "route", r.Pattern, "error", err)
		s.problem(w, r, http.StatusInternalServerError, "internal", "internal error (request id "+requestID(r)+")", nil)
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}
