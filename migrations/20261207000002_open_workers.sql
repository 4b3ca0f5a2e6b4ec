-- Open runtime workers: machines anyone may lend to generate matches,
-- staked, paid into escrow, audited, slashed when an audit fails.

-- A player's choice per agent: may its versions run on workers the
-- operator does not run (their system prompt and adapter are then visible
-- to the worker that runs them).
alter table agents add column open_workers boolean not null default false;

-- A generation claim on a formed match: the built-in runtime's (short) or
-- a worker's lease (until its deadline and audit). Nobody else generates
-- the match while it holds.
alter table matches add column claimed_until timestamptz;
-- The lease holding the claim; none: the runtime's (which renews its own,
-- step after step of a game).
alter table matches add column claimed_by uuid;

create table workers (
    id              uuid primary key,
    owner_id        uuid not null references users (id),
    name            text not null,
    public_key      bytea not null unique check (length(public_key) = 32),
    model_sha256    text not null,
    runtime_version text not null,
    recipe          text not null,
    device          text not null,
    max_batch       integer not null check (max_batch between 1 and 64),
    stake           bigint not null check (stake >= 0),
    status          text not null default 'active' check (status in ('active', 'left')),
    jobs_done       bigint not null default 0,
    tokens_done     bigint not null default 0,
    audits_passed   integer not null default 0,
    audits_failed   integer not null default 0,
    -- Audits passed since the last failure: the audit rate falls with it.
    clean_streak    integer not null default 0,
    strikes         integer not null default 0,
    banned_until    timestamptz,
    last_seen       timestamptz,
    created_at      timestamptz not null default now(),
    left_at         timestamptz
);
create index workers_owner on workers (owner_id);
create unique index workers_owner_name on workers (owner_id, lower(name)) where status = 'active';

create table worker_leases (
    id          uuid primary key,
    worker_id   uuid not null references workers (id),
    deadline    timestamptz not null,
    state       text not null default 'open' check (state in ('open', 'answered', 'expired')),
    created_at  timestamptz not null default now(),
    answered_at timestamptz
);
create unique index worker_leases_one_open on worker_leases (worker_id) where state = 'open';

-- One seat of one match, as assigned to a worker and as it answered.
create table worker_jobs (
    id            uuid primary key,
    lease_id      uuid not null references worker_leases (id),
    worker_id     uuid not null references workers (id),
    match_id      uuid not null references matches (id),
    slot          smallint not null,
    attempt       integer not null,
    assignment    jsonb not null,
    record        jsonb,
    record_sha256 text,
    state         text not null default 'leased'
                  check (state in ('leased', 'auditing', 'accepted', 'rejected', 'expired', 'void')),
    audited       boolean not null default false,
    audit         jsonb,
    tokens        integer not null default 0,
    pay           bigint not null default 0,
    released      boolean not null default false,
    created_at    timestamptz not null default now(),
    answered_at   timestamptz,
    unique (lease_id, match_id, slot)
);
create index worker_jobs_match on worker_jobs (match_id);
create index worker_jobs_auditing on worker_jobs (answered_at) where state = 'auditing';
create index worker_jobs_escrow on worker_jobs (worker_id, answered_at) where state = 'accepted' and not released;

-- Which worker's record an output came from (none: the built-in runtime).
alter table outputs add column worker_job_id uuid references worker_jobs (id);

-- The audit choice is a hash of a secret and the match: the secret's
-- sha256 is shown before its day's audits and the secret after, so anyone
-- can recompute which matches had to be audited.
create table audit_secrets (
    day        date primary key,
    secret     bytea not null,
    commitment text not null
);

-- Stake and escrow accounts, one each per worker.
alter table accounts add column worker_id uuid references workers (id);
alter table accounts drop constraint accounts_kind_check;
alter table accounts add constraint accounts_kind_check
    check (kind in ('mint', 'house', 'user', 'pot', 'stake', 'escrow'));
alter table accounts add constraint accounts_worker_check
    check ((kind in ('stake', 'escrow')) = (worker_id is not null));
create unique index accounts_worker on accounts (worker_id, kind) where worker_id is not null;
