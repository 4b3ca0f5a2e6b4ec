//! Redis: the shared connection, the work queues (Redis Streams with
//! consumer groups) and the live-event fan-out. Redis only ever says "look
//! at X"; what X is and where it stands lives in PostgreSQL.

pub mod events;
pub mod redis;
pub mod streams;

pub use self::events::{Event, Events};
pub use self::redis::{Redis, RedisError, RedisSettings};
