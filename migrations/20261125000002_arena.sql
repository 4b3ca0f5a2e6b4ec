-- The arena's truth: money, Spaces, agents, matches and what they produced.
-- Money is integer credits. Every movement is one ledger transaction whose
-- entries sum to zero; entries are append-only.

create table api_tokens (
    id           uuid primary key,
    user_id      uuid not null references users (id),
    name         text not null,
    -- sha256 of the secret: the secret is random (256 bits), so a fast hash
    -- is enough, and a lookup by hash needs no scan.
    secret_hash  text not null unique,
    scopes       text[] not null,
    created_at   timestamptz not null default now(),
    last_used_at timestamptz,
    revoked_at   timestamptz
);
create index api_tokens_user on api_tokens (user_id);

-- Accounts: one per user, one pot per match, the mint (the only account that
-- may go negative: its balance is minus all credits ever issued) and the house.
create table accounts (
    id         uuid primary key,
    kind       text not null check (kind in ('mint', 'house', 'user', 'pot')),
    user_id    uuid references users (id),
    match_id   uuid,
    balance    bigint not null default 0,
    created_at timestamptz not null default now(),
    check (kind = 'mint' or balance >= 0),
    check ((kind = 'user') = (user_id is not null)),
    check ((kind = 'pot') = (match_id is not null))
);
create unique index accounts_user on accounts (user_id) where kind = 'user';
create unique index accounts_match on accounts (match_id) where kind = 'pot';
create unique index accounts_singleton on accounts (kind) where kind in ('mint', 'house');
insert into accounts (id, kind) values
    ('00000000-0000-0000-0000-00000000000a', 'mint'),
    ('00000000-0000-0000-0000-00000000000b', 'house');

create table ledger_transactions (
    id              uuid primary key,
    -- A retried request with the same key posts nothing twice.
    idempotency_key text not null unique,
    kind            text not null,
    match_id        uuid,
    memo            text not null default '',
    created_at      timestamptz not null default now()
);

create table ledger_entries (
    id             bigint generated always as identity primary key,
    transaction_id uuid not null references ledger_transactions (id),
    account_id     uuid not null references accounts (id),
    amount         bigint not null check (amount <> 0),
    balance_after  bigint not null,
    created_at     timestamptz not null default now()
);
create index ledger_entries_account on ledger_entries (account_id, id);
create index ledger_entries_transaction on ledger_entries (transaction_id);

create function arena_append_only() returns trigger language plpgsql as $$
begin
    raise exception '% is append-only', tg_table_name using errcode = 'P0001';
end $$;
create trigger ledger_entries_append_only before update or delete on ledger_entries
    for each row execute function arena_append_only();
create trigger ledger_transactions_append_only before update or delete on ledger_transactions
    for each row execute function arena_append_only();

-- Spaces and their immutable versions. The chain head is the hash of the
-- last settled match record; each settled match links to the one before.
create table spaces (
    id              uuid primary key,
    slug            text not null unique,
    owner_id        uuid not null references users (id),
    active          boolean not null default true,
    current_version integer not null,
    chain_seq       bigint not null default 0,
    chain_head      text not null default '',
    created_at      timestamptz not null default now()
);

create table space_versions (
    space_id   uuid not null references spaces (id),
    version    integer not null,
    -- The TOML as written and the files it names (prompt file, schemas),
    -- so a version is complete without the designer's disk.
    source     text not null,
    files      jsonb not null default '{}',
    sha256     text not null,
    -- Read from the source at publish time, for listings.
    description      text not null,
    agents_per_match integer not null,
    entry_fee        bigint not null,
    created_by uuid not null references users (id),
    created_at timestamptz not null default now(),
    primary key (space_id, version)
);

-- Adapters by content: an agent version names one by its sha256.
create table adapters (
    sha256      text primary key,
    config      text not null,
    weights     bytea not null,
    bytes       bigint not null,
    uploaded_by uuid not null references users (id),
    created_at  timestamptz not null default now()
);

create table agents (
    id              uuid primary key,
    owner_id        uuid not null references users (id),
    name            text not null,
    current_version integer not null,
    created_at      timestamptz not null default now()
);
create unique index agents_owner_name on agents (owner_id, lower(name));

create table agent_versions (
    agent_id        uuid not null references agents (id),
    version         integer not null,
    base_model      text not null,
    system_prompt   text not null,
    sampling        jsonb not null,
    adapter_sha256  text references adapters (sha256),
    parent_version  integer,
    training_job_id uuid,
    note            text not null default '',
    created_at      timestamptz not null default now(),
    primary key (agent_id, version)
);

-- An agent entered into a Space, with its online rating there (Weng-Lin).
create table entries (
    agent_id   uuid not null references agents (id),
    space_id   uuid not null references spaces (id),
    owner_id   uuid not null references users (id),
    active     boolean not null default true,
    mu         double precision not null,
    sigma      double precision not null,
    matches    integer not null default 0,
    -- The unsettled match the agent plays in this Space, if any.
    open_match uuid,
    created_at timestamptz not null default now(),
    primary key (agent_id, space_id)
);
create index entries_space on entries (space_id) where active;

create table matches (
    id            uuid primary key,
    space_id      uuid not null references spaces (id),
    space_version integer not null,
    status        text not null check (status in ('formed', 'generated', 'judged', 'settled', 'failed')),
    prompt_index  integer not null,
    prompt        text not null,
    reference     text,
    pot           bigint not null,
    error         text,
    seq           bigint,
    prev_hash     text,
    record_hash   text,
    created_at    timestamptz not null default now(),
    updated_at    timestamptz not null default now(),
    settled_at    timestamptz,
    foreign key (space_id, space_version) references space_versions (space_id, version)
);
create index matches_open on matches (updated_at) where status in ('formed', 'generated', 'judged');
create index matches_space on matches (space_id, created_at desc);
create unique index matches_space_seq on matches (space_id, seq) where seq is not null;

create table match_agents (
    match_id      uuid not null references matches (id),
    slot          smallint not null,
    agent_id      uuid not null references agents (id),
    agent_version integer not null,
    owner_id      uuid not null references users (id),
    entry_fee     bigint not null,
    mu_before     double precision not null,
    sigma_before  double precision not null,
    mu_after      double precision,
    sigma_after   double precision,
    rank          integer,
    payout        bigint,
    primary key (match_id, slot),
    unique (match_id, agent_id),
    foreign key (agent_id, agent_version) references agent_versions (agent_id, version)
);
create index match_agents_agent on match_agents (agent_id);

create table outputs (
    match_id   uuid not null references matches (id),
    slot       smallint not null,
    text       text not null,
    finish     text not null,
    tokens     integer not null,
    created_at timestamptz not null default now(),
    primary key (match_id, slot)
);

create table verdicts (
    match_id   uuid primary key references matches (id),
    verdict    jsonb not null,
    created_at timestamptz not null default now()
);

create table pairs (
    id            uuid primary key,
    match_id      uuid not null references matches (id),
    space_id      uuid not null references spaces (id),
    chosen_slot   smallint not null,
    rejected_slot smallint not null,
    margin        double precision not null,
    consistent    boolean not null,
    license       text,
    detail        jsonb not null,
    created_at    timestamptz not null default now(),
    unique (match_id, chosen_slot, rejected_slot)
);
create index pairs_space on pairs (space_id, created_at);

-- Work to hand to Redis, written in the same transaction as the state
-- change it follows; relayed and deleted after XADD.
create table outbox (
    id         bigint generated always as identity primary key,
    stream     text not null,
    match_id   uuid not null,
    created_at timestamptz not null default now()
);
