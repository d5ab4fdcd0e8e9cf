package domain

import "time"

// Triggers start runs with no caller at a terminal: a signed webhook or a clock. Only
// pipectl serve acts on them.
type Triggers struct {
	Webhook  *WebhookTrigger
	Schedule *ScheduleTrigger
}

// WebhookTrigger lets POST /hooks/{name} create runs from bodies signed with a secret.
type WebhookTrigger struct {
	// Secret names the environment variable that holds the HMAC-SHA256 key.
	Secret string
	// DeliveryHeader names the request header whose value identifies a delivery; a delivery
	// sent again (the same id) finds the run it made. Default X-Pipectl-Delivery.
	DeliveryHeader string
	// Input maps the delivery's parsed body (the variable body) to the run input: a value
	// with ${{ }} placeholders; nil means the body is the input.
	Input any
}

// Catch-up policies of a schedule after the server was down over one or more slots.
const (
	// CatchUpSkip: missed slots are skipped; the next run is the next slot.
	CatchUpSkip = "skip"
	// CatchUpLatest: only the most recent missed slot runs.
	CatchUpLatest = "latest"
	// CatchUpAll: every missed slot runs, up to MaxCatchUp of the most recent.
	CatchUpAll = "all"
)

// MaxCatchUp bounds the missed slots CatchUpAll creates after downtime.
const MaxCatchUp = 100

// ScheduleTrigger creates one run per slot of a cron expression or a fixed interval.
type ScheduleTrigger struct {
	// Cron is a standard 5-field expression, read in Timezone (default UTC).
	Cron     string
	Timezone string
	// Every is the interval of slots aligned on the Unix epoch, instead of Cron.
	Every   time.Duration
	CatchUp string
	// Input is the run input of every slot (default {}).
	Input any
}
