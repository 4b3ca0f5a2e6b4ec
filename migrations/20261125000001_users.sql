-- People who use Arena. Roles grow with the platform: a player enters agents,
-- a designer writes Spaces, a buyer exports preference pairs.
create table users (
    id            uuid primary key,
    username      text not null,
    password_hash text not null,
    role          text not null check (role in ('player', 'designer', 'buyer', 'admin')),
    created_at    timestamptz not null default now()
);

create unique index users_username_key on users (lower(username));
