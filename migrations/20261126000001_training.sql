-- Training: per-agent policies, jobs for the trainer role, their curves.

-- How an agent trains in one Space: by hand, or every N new pairs it took
-- part in. `settings` are the job settings (hyper-parameters, gate size).
create table training_policies (
    agent_id    uuid not null references agents (id),
    space_id    uuid not null references spaces (id),
    mode        text not null check (mode in ('manual', 'every')),
    every_pairs integer check (every_pairs is null or every_pairs > 0),
    settings    jsonb not null,
    updated_at  timestamptz not null default now(),
    primary key (agent_id, space_id),
    check (mode = 'manual' or every_pairs is not null)
);

-- One DPO (or SFT) run from an agent version, then its promotion gate.
-- The pairs are pinned when the job is made, so a retried job trains on
-- exactly the same data.
create table training_jobs (
    id              uuid primary key,
    agent_id        uuid not null references agents (id),
    owner_id        uuid not null references users (id),
    space_id        uuid not null references spaces (id),
    space_version   integer not null,
    parent_version  integer not null,
    trigger         text not null check (trigger in ('manual', 'policy')),
    settings        jsonb not null,
    pair_ids        uuid[] not null,
    status          text not null
                    check (status in ('queued', 'training', 'gating', 'promoted', 'rejected', 'failed')),
    step            integer not null default 0,
    steps           integer,
    -- The trained adapter, its manifest, the gate's games and decision.
    adapter_sha256  text references adapters (sha256),
    manifest        jsonb,
    gate            jsonb,
    new_version     integer,
    error           text,
    attempts        integer not null default 0,
    worker          text,
    heartbeat_at    timestamptz,
    created_at      timestamptz not null default now(),
    started_at      timestamptz,
    finished_at     timestamptz,
    foreign key (agent_id, parent_version) references agent_versions (agent_id, version),
    foreign key (space_id, space_version) references space_versions (space_id, version)
);
-- At most one open job per agent.
create unique index training_jobs_open on training_jobs (agent_id) where status in ('queued', 'training', 'gating');
create index training_jobs_agent on training_jobs (agent_id, created_at desc);

-- One row per optimizer step: the curves the API and pages draw.
create table training_metrics (
    job_id  uuid not null references training_jobs (id),
    step    integer not null,
    metrics jsonb not null,
    primary key (job_id, step)
);

alter table agent_versions
    add constraint agent_versions_training_job foreign key (training_job_id) references training_jobs (id);

-- The outbox now carries training jobs too: its id column names a match or
-- a job, by stream.
alter table outbox rename column match_id to subject;

-- A job makes at most one version.
create unique index agent_versions_training_job on agent_versions (training_job_id) where training_job_id is not null;
