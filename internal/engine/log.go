package engine

import (
	"context"
	"log/slog"

	"github.com/pipectl/pipectl/internal/domain"
)

// logAttempt writes the structured line every attempt gets.
func (s *session) logAttempt(u *unit, att *domain.Attempt) {
	if s.held != nil {
		// The unit's fields, not the unit: capturing u would move every caller's unit to
		// the heap, a run held or not (an allocation per attempt).
		step, item := u.step, u.item
		s.tell(func() { s.logAttemptNow(&unit{step: step, item: item}, att) })
		return
	}
	s.logAttemptNow(u, att)
}

func (s *session) logAttemptNow(u *unit, att *domain.Attempt) {
	// Typed attributes, not key-value pairs: nothing is boxed for a line per step.
	attrs := make([]slog.Attr, 0, 11)
	attrs = append(attrs,
		slog.String("run_id", s.run.ID), slog.String("pipeline", s.run.Pipeline), slog.String("idempotency_key", s.run.IdempotencyKey),
		slog.String("step", u.step.ID), slog.Int("attempt", att.Attempt), slog.Int64("duration_ms", att.DurationMS), slog.String("outcome", att.Outcome),
	)
	if att.ItemIndex != domain.NoItem {
		attrs = append(attrs, slog.Int("item", att.ItemIndex))
	}
	level := slog.LevelInfo
	if att.Outcome == domain.OutcomeFailed {
		level = slog.LevelWarn
		attrs = append(attrs, slog.String("error_class", string(att.ErrorClass)), slog.String("error", att.Error))
	}
	s.logger.LogAttrs(context.Background(), level, "step attempt", attrs...)
	if o := s.e.Observer; o != nil {
		o.AttemptFinished(s.run.Pipeline, u.step, att)
	}
}

// RedactingHandler wraps a slog handler so that no secret value reaches the log, whatever
// attribute or message carries it.
func RedactingHandler(h slog.Handler, r *domain.Redactor) slog.Handler {
	return &redacting{inner: h, r: r}
}

type redacting struct {
	inner slog.Handler
	r     *domain.Redactor
}

func (h *redacting) Enabled(ctx context.Context, l slog.Level) bool { return h.inner.Enabled(ctx, l) }

func (h *redacting) Handle(ctx context.Context, rec slog.Record) error {
	msg := h.r.String(rec.Message)
	// Most lines hold no secret: they go on as they came, without a copy of the record (a line
	// per step attempt; a record of more than five attributes allocates when copied).
	same := msg == rec.Message
	if same {
		rec.Attrs(func(a slog.Attr) bool {
			same = h.unchanged(a)
			return same
		})
	}
	if same {
		return h.inner.Handle(ctx, rec)
	}
	out := slog.NewRecord(rec.Time, rec.Level, msg, rec.PC)
	rec.Attrs(func(a slog.Attr) bool {
		out.AddAttrs(h.attr(a))
		return true
	})
	return h.inner.Handle(ctx, out)
}

// unchanged reports whether attr(a) would give a back: a string with nothing to redact, or a
// kind attr leaves as it is. Groups, values of any type and LogValuers are not looked into.
func (h *redacting) unchanged(a slog.Attr) bool {
	switch a.Value.Kind() {
	case slog.KindString:
		s := a.Value.String()
		return h.r.String(s) == s
	case slog.KindGroup, slog.KindAny, slog.KindLogValuer:
		return false
	}
	return true
}

func (h *redacting) attr(a slog.Attr) slog.Attr {
	v := a.Value.Resolve()
	switch v.Kind() {
	case slog.KindString:
		return slog.String(a.Key, h.r.String(v.String()))
	case slog.KindGroup:
		attrs := v.Group()
		out := make([]any, len(attrs))
		for i, g := range attrs {
			out[i] = h.attr(g)
		}
		return slog.Group(a.Key, out...)
	case slog.KindAny:
		if err, ok := v.Any().(error); ok {
			return slog.String(a.Key, h.r.String(err.Error()))
		}
		return slog.String(a.Key, h.r.String(v.String()))
	}
	return a
}

func (h *redacting) WithAttrs(attrs []slog.Attr) slog.Handler {
	red := make([]slog.Attr, len(attrs))
	for i, a := range attrs {
		red[i] = h.attr(a)
	}
	return &redacting{inner: h.inner.WithAttrs(red), r: h.r}
}

func (h *redacting) WithGroup(name string) slog.Handler {
	return &redacting{inner: h.inner.WithGroup(name), r: h.r}
}
