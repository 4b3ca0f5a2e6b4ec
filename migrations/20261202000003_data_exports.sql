-- Data as a product: what a Space charges for its pairs, facts a buyer
-- filters on (language, near duplicates), and exports as paid jobs.

-- Read from the source's [data] table at publish time, like entry_fee.
alter table space_versions
    add column data_price bigint not null default 0 check (data_price >= 0),
    add column data_designer_share double precision not null default 0.2,
    add column data_players_share double precision not null default 0.6;

-- Filled in after settlement by `store::pairs::enrich` (lang null: not
-- yet). minhash is the pair's MinHash signature (32 values), bands its 8
-- locality-sensitive bands (GIN-indexed, so near duplicates are found
-- without a scan); duplicate_of the earliest pair it nearly repeats.
alter table pairs
    add column lang text,
    add column minhash integer[],
    add column bands integer[],
    add column duplicate_of uuid references pairs (id);
create index pairs_unenriched on pairs (created_at, id) where lang is null;
create index pairs_bands on pairs using gin (bands);

create table data_exports (
    id              uuid primary key,
    buyer_id        uuid not null references users (id),
    -- The buyer's key: a retried request finds its export, never a second one.
    idempotency_key text not null,
    filter          jsonb not null,
    format          text not null check (format in ('jsonl', 'parquet')),
    shape           text not null check (shape in ('standard', 'conversational')),
    gzip            boolean not null,
    scrub_pii       boolean not null,
    -- The licences of the selected pairs, which the buyer accepted.
    licenses        text[] not null,
    pairs           bigint not null,
    price           bigint not null check (price >= 0),
    status          text not null check (status in ('queued', 'running', 'done', 'failed')),
    rows_written    bigint not null default 0,
    -- [{name, rows, bytes, sha256}], the card included.
    files           jsonb not null default '[]',
    error           text,
    created_at      timestamptz not null default now(),
    finished_at     timestamptz,
    unique (buyer_id, idempotency_key)
);
create index data_exports_buyer on data_exports (buyer_id, created_at desc);

-- Exactly the pairs an export paid for, fixed when it was paid.
create table data_export_pairs (
    export_id uuid not null references data_exports (id),
    seq       bigint not null,
    pair_id   uuid not null references pairs (id),
    primary key (export_id, seq)
);
