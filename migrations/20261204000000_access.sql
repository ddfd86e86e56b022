-- Access control: API keys kept in the database, the key behind every log row, and a read-only
-- role for analysts.

CREATE TABLE api_keys (
    id text PRIMARY KEY CHECK (id ~ '^[0-9a-f]{12}$'),
    name text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    secret_sha256 bytea NOT NULL CHECK (octet_length(secret_sha256) = 32),
    scopes text[] NOT NULL CHECK (
        cardinality(scopes) > 0
        AND scopes <@ ARRAY['predict', 'history', 'monitoring', 'outcomes', 'models']
    ),
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz,
    revoked_at timestamptz,
    last_used_at timestamptz,
    rotated_from text REFERENCES api_keys (id),
    updated_at timestamptz NOT NULL DEFAULT clock_timestamp()
);

COMMENT ON TABLE api_keys IS
    'API keys (house-price-api keys create|list|revoke|rotate). The key itself is hpk_<id>_<secret> and is shown once; only the SHA-256 of the secret is stored. Every replica re-reads this table when count(*) or max(updated_at) changes (at most KEY_REFRESH_MS later).';
COMMENT ON COLUMN api_keys.id IS 'Public key id (12 hex digits), the part of the key before the secret; stored in prediction_log.api_key_id.';
COMMENT ON COLUMN api_keys.name IS 'Who or what the key is for.';
COMMENT ON COLUMN api_keys.secret_sha256 IS 'SHA-256 of the secret part (256 random bits): never the secret itself.';
COMMENT ON COLUMN api_keys.scopes IS 'What the key may do: predict, history, monitoring, outcomes, models.';
COMMENT ON COLUMN api_keys.created_at IS 'When the key was created.';
COMMENT ON COLUMN api_keys.expires_at IS 'The key stops working at this time (null: never).';
COMMENT ON COLUMN api_keys.revoked_at IS 'When the key was revoked (null: not revoked).';
COMMENT ON COLUMN api_keys.last_used_at IS 'Last accepted use, written by the replicas about once per KEY_REFRESH_MS.';
COMMENT ON COLUMN api_keys.rotated_from IS 'The key this one replaced (keys rotate).';
COMMENT ON COLUMN api_keys.updated_at IS 'Last change of the key itself (not of last_used_at): what the replicas poll.';

ALTER TABLE prediction_log ADD COLUMN api_key_id text;
COMMENT ON COLUMN prediction_log.api_key_id IS
    'The API key the request presented (api_keys.id, or env:<12 hex digits of its digest> for a key from API_KEYS); null without a key.';

-- The analysts' role: SELECT on the SQL contract, nothing else (no api_keys, no writes). The
-- set-up script creates it (and the login role house_price_analyst in it) as the superuser; a
-- migrating role without CREATEROLE that finds no such role skips the grants with a notice.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'house_price_reader') THEN
        BEGIN
            CREATE ROLE house_price_reader NOLOGIN;
        EXCEPTION WHEN insufficient_privilege THEN
            RAISE NOTICE 'role house_price_reader does not exist and cannot be created here: analyst grants skipped';
            RETURN;
        END;
    END IF;
    GRANT USAGE ON SCHEMA public TO house_price_reader;
    -- No temporary tables for roles without a grant of their own (the owner keeps its rights).
    EXECUTE format('REVOKE TEMPORARY ON DATABASE %I FROM PUBLIC', current_database());
    GRANT SELECT ON
        prediction_log, prediction_outcomes, prediction_outcome_history,
        model_events, model_set_in_force, model_references,
        drift_counts, monitoring_reports, drift_alerts,
        traffic_hourly, accuracy_hourly, histogram_hourly, shadow_hourly, shadow_difference_hourly,
        v_predictions_hourly, v_rejections_daily, v_performance_daily, v_drift_psi_daily, v_shadow_comparison
    TO house_price_reader;
END
$$;
