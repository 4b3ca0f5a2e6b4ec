-- Decision-point pairs from games, sold beside the whole-answer pairs.
--
-- A decision pair is one seat's view at one turn (its prompt) and two
-- answers to it: a legal answer over an illegal attempt at the same view
-- (a retry), or two matches' answers to the same view whose lines ended
-- differently for the seat that gave them (the better-ending one chosen).
-- The pair carries its own texts; match_id is the match whose settlement
-- made it (so its record commits to it), chosen_match_id and
-- rejected_match_id the matches each answer was given in (null: match_id).
alter table pairs
    add column kind text not null default 'whole' check (kind in ('whole', 'decision')),
    add column decision_key text not null default '',
    add column step integer,
    add column chosen_match_id uuid references matches (id),
    add column rejected_match_id uuid references matches (id),
    add column prompt text,
    add column chosen_text text,
    add column rejected_text text,
    add constraint pairs_decision_complete check (
        kind = 'whole'
        or (decision_key <> '' and prompt is not null and chosen_text is not null and rejected_text is not null));
-- One match can make several decision pairs between the same two slots.
alter table pairs drop constraint pairs_match_id_chosen_slot_rejected_slot_key;
alter table pairs add constraint pairs_match_slots_decision unique (match_id, chosen_slot, rejected_slot, decision_key);

-- Every move of a referee-decided game, with the seat's final score, kept
-- at judging so a later match's move at the same view (sha256 of its text)
-- finds it.
create table game_decisions (
    space_id    uuid not null references spaces (id),
    view_sha256 text not null,
    match_id    uuid not null references matches (id),
    step        integer not null,
    slot        smallint not null,
    answer      text not null,
    note        text not null,
    legal       boolean not null,
    score       double precision not null,
    created_at  timestamptz not null default now(),
    primary key (match_id, step, slot)
);
create index game_decisions_view on game_decisions (space_id, view_sha256, created_at desc);
