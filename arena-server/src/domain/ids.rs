//! Ids as types: a `MatchId` cannot be passed where an `AgentId` is meant.
//! Each wraps a UUID, prints and serialises as one, and binds to a `uuid`
//! column (and `uuid[]` for a slice) through `sqlx(transparent)`.

macro_rules! uuid_id {
    ($($(#[$doc:meta])* $name:ident),* $(,)?) => {$(
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize, sqlx::Type)]
        #[serde(transparent)]
        #[sqlx(transparent)]
        pub struct $name(pub uuid::Uuid);

        impl $name {
            /// A fresh random id.
            pub fn new() -> $name {
                $name(uuid::Uuid::new_v4())
            }

            pub fn as_uuid(self) -> uuid::Uuid {
                self.0
            }
        }

        impl Default for $name {
            fn default() -> $name {
                $name::new()
            }
        }

        impl From<uuid::Uuid> for $name {
            fn from(id: uuid::Uuid) -> $name {
                $name(id)
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                self.0.fmt(f)
            }
        }

        impl std::str::FromStr for $name {
            type Err = uuid::Error;
            fn from_str(s: &str) -> Result<$name, uuid::Error> {
                uuid::Uuid::parse_str(s).map($name)
            }
        }
    )*};
}

uuid_id!(
    /// A user (player, designer, buyer or admin).
    UserId,
    /// An agent; its versions are numbered from 1 per agent.
    AgentId,
    /// A Space; its versions are numbered from 1 per Space.
    SpaceId,
    /// A match.
    MatchId,
    /// A training job.
    JobId,
    /// A preference pair.
    PairId,
    /// An API token.
    TokenId,
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_through_text_and_json() {
        let id = MatchId::new();
        assert_eq!(id.to_string().parse::<MatchId>().unwrap(), id);
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, format!("\"{id}\""));
        assert_eq!(serde_json::from_str::<MatchId>(&json).unwrap(), id);
        assert!("not-a-uuid".parse::<AgentId>().is_err());
    }
}
