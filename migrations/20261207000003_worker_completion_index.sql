-- The duplicate-answer check looks records up by their completion key
-- (adapter, prompt and tokens): an index, so it stays a lookup.
create index worker_jobs_completion on worker_jobs ((audit->>'completion_key'))
    where record_sha256 is not null;
