-- What ties a model call to the provider's side: the provider's request id and processing
-- time, the id pipectl sent, the model that answered, the family the request was shaped for
-- and the reasoning tokens. processing_ms and reasoning_tokens are NULL when not reported.
ALTER TABLE model_calls ADD COLUMN family TEXT NOT NULL DEFAULT '';
ALTER TABLE model_calls ADD COLUMN client_request_id TEXT NOT NULL DEFAULT '';
ALTER TABLE model_calls ADD COLUMN request_id TEXT NOT NULL DEFAULT '';
ALTER TABLE model_calls ADD COLUMN response_model TEXT NOT NULL DEFAULT '';
ALTER TABLE model_calls ADD COLUMN processing_ms INTEGER;
ALTER TABLE model_calls ADD COLUMN reasoning_tokens INTEGER;
