-- Multi-turn matches: one row per step (a turn, or a retry of one) with
-- the answers as the referee read them — each with the view its seat was
-- shown — and the game's state after the step (its transcript left out:
-- the rows' moves, in order, are the transcript). Unique per (match,
-- step): a redelivered step stores nothing twice, and a match resumes
-- from its last row.
create table match_turns (
    match_id   uuid not null references matches (id),
    step       integer not null check (step >= 0),
    turn       integer not null check (turn >= 0),
    moves      jsonb not null,
    state      jsonb not null,
    created_at timestamptz not null default now(),
    primary key (match_id, step)
);
