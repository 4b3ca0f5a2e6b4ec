-- API tokens expire (1 to 365 days after they were made; 90 by default).
-- Tokens made before this migration get 90 days from now.
alter table api_tokens add column expires_at timestamptz;
update api_tokens set expires_at = now() + interval '90 days' where expires_at is null;
alter table api_tokens alter column expires_at set not null;

-- A training job's price, paid by the agent's owner to the house when the
-- job is made (refunded if the job fails), and its budget of trained tokens.
alter table training_jobs add column price bigint not null default 0 check (price >= 0);
alter table training_jobs add column token_budget bigint not null default 0 check (token_budget >= 0);
