-- Entries are pinned to the terms a player accepted: a Space version that
-- changes anything but its prompts and description (fee, payout, match
-- size, verifiers, judge) raises the Space's terms_version, and an entry
-- plays again only once its player re-enters (accepting that version).
alter table spaces add column terms_version integer not null default 1;
alter table entries add column accepted_version integer not null default 1;
