-- The core's statements outside background_jobs, one named text each (prosaas_core.store).

-- token_by_hash --
-- The API token with this hash (unique index): every API request runs it but POST /api/jobs,
-- whose INSERT looks the token up itself (insert_job_for_token).
SELECT business_id, token_hash, revoked_at FROM api_tokens WHERE token_hash = %(digest)s
