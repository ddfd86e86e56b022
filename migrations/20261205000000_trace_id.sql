-- The W3C trace id of the request a row belongs to, so a row can be found from a trace and a
-- trace from a row (deploy/grafana links the two).
ALTER TABLE prediction_log ADD COLUMN trace_id text;
COMMENT ON COLUMN prediction_log.trace_id IS
    'W3C trace id (32 lowercase hex digits) of the request: the exported trace when OTEL_EXPORTER_OTLP_ENDPOINT is set (continuing the caller''s traceparent), else the caller''s traceparent trace id; null without either.';
