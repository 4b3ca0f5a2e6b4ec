-- Battles and human votes: people judge anonymous pairs of answers of
-- settled matches; counted votes become human-labelled pairs and audit the
-- AI judge (`domain::votes`, `store::votes`).

-- A Space's `[votes]` table, read at publish time like `[data]`.
alter table space_versions
    add column votes_open boolean not null default false,
    add column vote_criterion text,
    add column designer_votes boolean not null default false,
    -- Credits per human pair; null: the Space's data price.
    add column human_price bigint check (human_price >= 0);

-- The key that signs ballots (HMAC-SHA256), made once, shared by every
-- server process.
create table ballot_keys (
    id         smallint primary key check (id = 1),
    key        bytea not null check (octet_length(key) = 32),
    created_at timestamptz not null default now()
);

-- One row per ballot cast (its id is the ballot's id, so a ballot is used
-- once); a voter votes once per match. `reason` is why the vote does not
-- count (null: it counts, unless its voter is flagged or unreliable —
-- `voters`). A gold ballot shows `slot_a` against another match's answer
-- (`decoy_match_id`, `decoy_slot`); `gold_slot` is the known-better side.
create table votes (
    id             uuid primary key,
    voter_id       uuid not null references users (id),
    match_id       uuid not null references matches (id),
    space_id       uuid not null references spaces (id),
    slot_a         smallint not null,
    slot_b         smallint not null,
    decoy_match_id uuid references matches (id),
    decoy_slot     smallint,
    -- A gold ballot showed the known-better answer as B.
    gold_second    boolean not null default false,
    choice         text not null check (choice in ('a', 'b', 'tie', 'bad', 'skip')),
    reason         text check (reason in ('skipped', 'too_fast', 'over_cap', 'identity', 'gold')),
    issued_at      timestamptz not null,
    cast_at        timestamptz not null default now(),
    elapsed_ms     bigint not null,
    -- sha256 of the voter's address and the day (the per-address cap).
    address        text not null,
    -- In the audit share: never used to train the judge; only these feed
    -- the audit figures (a fixed share of matches by hash).
    audit_share    boolean not null,
    unique (voter_id, match_id),
    check ((decoy_match_id is null) = (decoy_slot is null))
);
create index votes_match on votes (match_id);
create index votes_voter_day on votes (voter_id, cast_at);
create index votes_address_day on votes (address, cast_at);
create index votes_space on votes (space_id, cast_at);

-- What the integrity check knows of each voter: gold ballots answered and
-- right, and a flag from the outlier test (votes of a flagged voter do not
-- count).
create table voters (
    user_id     uuid primary key references users (id),
    gold_total  integer not null default 0,
    gold_right  integer not null default 0,
    flagged     boolean not null default false,
    flag_reason text,
    flagged_at  timestamptz,
    updated_at  timestamptz not null default now()
);

-- A voter's report on a battle's answers (abuse, personal data), seen by
-- admins on the integrity page.
create table vote_reports (
    vote_id    uuid primary key references votes (id),
    reporter   uuid not null references users (id),
    reason     text not null check (reason in ('abuse', 'personal_data')),
    created_at timestamptz not null default now()
);

-- Where a pair's label comes from. Human pairs carry their vote counts;
-- a judge pair people overruled is kept (a sale may hold it) but left out
-- of the default export; a human pair whose majority flipped or tied is
-- withdrawn the same way.
alter table pairs
    add column label_source text not null default 'judge' check (label_source in ('verifier', 'judge', 'human')),
    add column tier text check (tier in ('human_raw', 'human_verified')),
    add column votes_chosen integer,
    add column votes_rejected integer,
    add column votes_tied integer,
    add column voter_reliability double precision,
    add column judge_agrees boolean,
    add column overruled boolean not null default false,
    add column withdrawn boolean not null default false,
    add constraint pairs_human_complete check (
        (label_source = 'human') = (tier is not null and votes_chosen is not null and votes_rejected is not null));
update pairs set label_source = 'verifier' where kind = 'decision' or margin >= 1;
alter table pairs drop constraint pairs_match_slots_decision;
alter table pairs add constraint pairs_match_slots_decision_source
    unique (match_id, chosen_slot, rejected_slot, decision_key, label_source);
create index pairs_human on pairs (match_id) where label_source = 'human';
