-- The Open Inference Protocol's infer routes log with their own route value.
COMMENT ON COLUMN prediction_log.route IS
    'Entry point: graphql, rest:/prever_precos/ (the seed route) or v2:infer (the Open Inference Protocol''s POST /v2/models/{name}[/versions/{version}]/infer).';
