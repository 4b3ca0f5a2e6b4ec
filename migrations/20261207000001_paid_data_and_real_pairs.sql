-- A buyer reads the matches whose pairs they bought (a priced or private
-- Space's outputs are otherwise shown only to its players, its designer
-- and admins): found from a pair to the exports that hold it.
create index data_export_pairs_pair on data_export_pairs (pair_id);

-- Pairs a verdict proposed that settlement did not keep, per Space and
-- reason (`domain::dataset::DropReason`): the data-quality report of the
-- studio's analytics and the dataset card.
create table pair_drops (
    space_id uuid not null references spaces (id),
    reason   text not null check (reason in ('different_views', 'empty_chosen', 'identical_answers')),
    pairs    bigint not null check (pairs >= 0),
    primary key (space_id, reason)
);

-- Exports' files are deleted past the operator's retention period; the
-- row (what was bought, paid and by whom) is kept.
alter table data_exports add column expired_at timestamptz;

-- Why the platform paused a Space (a referee script failing its matches
-- again and again); cleared when its designer resumes it.
alter table spaces add column paused_reason text;
