//! Statuses as enums that mirror the database's CHECK constraints. Each is
//! stored as its lower-case name in a `text` column; reading a value the
//! enum does not know is a decode error, not a silent string.

/// Implements `sqlx::Type`, `Encode` and `Decode` for a text-backed enum
/// with `as_str` and `parse`.
macro_rules! text_enum {
    ($name:ident) => {
        impl sqlx::Type<sqlx::Postgres> for $name {
            fn type_info() -> sqlx::postgres::PgTypeInfo {
                <&str as sqlx::Type<sqlx::Postgres>>::type_info()
            }
            fn compatible(ty: &sqlx::postgres::PgTypeInfo) -> bool {
                <&str as sqlx::Type<sqlx::Postgres>>::compatible(ty)
            }
        }

        impl sqlx::postgres::PgHasArrayType for $name {
            fn array_type_info() -> sqlx::postgres::PgTypeInfo {
                <&str as sqlx::postgres::PgHasArrayType>::array_type_info()
            }
        }

        impl<'q> sqlx::Encode<'q, sqlx::Postgres> for $name {
            fn encode_by_ref(
                &self,
                buf: &mut sqlx::postgres::PgArgumentBuffer,
            ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
                <&str as sqlx::Encode<'q, sqlx::Postgres>>::encode_by_ref(&self.as_str(), buf)
            }
        }

        impl<'r> sqlx::Decode<'r, sqlx::Postgres> for $name {
            fn decode(value: sqlx::postgres::PgValueRef<'r>) -> Result<$name, sqlx::error::BoxDynError> {
                let text = <&str as sqlx::Decode<'r, sqlx::Postgres>>::decode(value)?;
                $name::parse(text).ok_or_else(|| format!("unknown {} {text:?}", stringify!($name)).into())
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl $name {
            /// The value as stored, or None for a name this enum does not know.
            pub fn parse(text: &str) -> Option<$name> {
                $name::ALL.into_iter().find(|v| v.as_str() == text)
            }
        }
    };
}

/// Where a match is in its life (`matches.status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MatchStatus {
    /// Agents, prompt and fees fixed; waiting for the agents' answers.
    Formed,
    /// Every agent answered; waiting for the judge.
    Generated,
    /// The verdict is stored; waiting for settlement.
    Judged,
    /// Ratings, payouts, pairs and the record are written.
    Settled,
    /// Given up; every fee was refunded.
    Failed,
}

impl MatchStatus {
    pub const ALL: [MatchStatus; 5] =
        [MatchStatus::Formed, MatchStatus::Generated, MatchStatus::Judged, MatchStatus::Settled, MatchStatus::Failed];
    /// The statuses of a match still in the pipeline.
    pub const OPEN: [MatchStatus; 3] = [MatchStatus::Formed, MatchStatus::Generated, MatchStatus::Judged];

    pub fn as_str(self) -> &'static str {
        match self {
            MatchStatus::Formed => "formed",
            MatchStatus::Generated => "generated",
            MatchStatus::Judged => "judged",
            MatchStatus::Settled => "settled",
            MatchStatus::Failed => "failed",
        }
    }

    /// Settled or failed: nothing will happen to it any more.
    pub fn is_final(self) -> bool {
        matches!(self, MatchStatus::Settled | MatchStatus::Failed)
    }
}
text_enum!(MatchStatus);

/// Where a training job is (`training_jobs.status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    Queued,
    Training,
    Gating,
    Promoted,
    Rejected,
    Failed,
}

impl JobStatus {
    pub const ALL: [JobStatus; 6] = [
        JobStatus::Queued,
        JobStatus::Training,
        JobStatus::Gating,
        JobStatus::Promoted,
        JobStatus::Rejected,
        JobStatus::Failed,
    ];
    /// A job in one of these holds the agent: no second job is made.
    pub const OPEN: [JobStatus; 3] = [JobStatus::Queued, JobStatus::Training, JobStatus::Gating];
    /// A trainer works on a job in one of these (and heart-beats).
    pub const RUNNING: [JobStatus; 2] = [JobStatus::Training, JobStatus::Gating];

    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Training => "training",
            JobStatus::Gating => "gating",
            JobStatus::Promoted => "promoted",
            JobStatus::Rejected => "rejected",
            JobStatus::Failed => "failed",
        }
    }
}
text_enum!(JobStatus);

/// How an agent trains in a Space (`training_policies.mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PolicyMode {
    /// Only when its owner asks.
    Manual,
    /// A job every N new pairs it took part in.
    Every,
}

impl PolicyMode {
    pub const ALL: [PolicyMode; 2] = [PolicyMode::Manual, PolicyMode::Every];

    pub fn as_str(self) -> &'static str {
        match self {
            PolicyMode::Manual => "manual",
            PolicyMode::Every => "every",
        }
    }
}
text_enum!(PolicyMode);

/// What made a training job (`training_jobs.trigger`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobTrigger {
    Manual,
    Policy,
}

impl JobTrigger {
    pub const ALL: [JobTrigger; 2] = [JobTrigger::Manual, JobTrigger::Policy];

    pub fn as_str(self) -> &'static str {
        match self {
            JobTrigger::Manual => "manual",
            JobTrigger::Policy => "policy",
        }
    }
}
text_enum!(JobTrigger);

/// Where a buyer's data export is (`data_exports.status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExportStatus {
    /// Paid for; waiting for the export worker.
    Queued,
    /// Its files are being written.
    Running,
    /// Its files are ready to download.
    Done,
    /// Writing failed (the buyer may retry; the sale stands).
    Failed,
}

impl ExportStatus {
    pub const ALL: [ExportStatus; 4] =
        [ExportStatus::Queued, ExportStatus::Running, ExportStatus::Done, ExportStatus::Failed];

    pub fn as_str(self) -> &'static str {
        match self {
            ExportStatus::Queued => "queued",
            ExportStatus::Running => "running",
            ExportStatus::Done => "done",
            ExportStatus::Failed => "failed",
        }
    }

    /// Still to finish (the exports page refreshes while one is).
    pub fn in_progress(self) -> bool {
        matches!(self, ExportStatus::Queued | ExportStatus::Running)
    }
}
text_enum!(ExportStatus);

/// A pipeline stage. Each has a stream and a consumer group of its name,
/// and moves a match on from one status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stage {
    Generate,
    Judge,
    Settle,
}

impl Stage {
    pub const ALL: [Stage; 3] = [Stage::Generate, Stage::Judge, Stage::Settle];

    pub fn name(self) -> &'static str {
        match self {
            Stage::Generate => "generate",
            Stage::Judge => "judge",
            Stage::Settle => "settle",
        }
    }

    pub fn parse(name: &str) -> Option<Stage> {
        Stage::ALL.into_iter().find(|s| s.name() == name)
    }

    /// The stage that moves a match on from `status`.
    pub fn for_status(status: MatchStatus) -> Option<Stage> {
        match status {
            MatchStatus::Formed => Some(Stage::Generate),
            MatchStatus::Generated => Some(Stage::Judge),
            MatchStatus::Judged => Some(Stage::Settle),
            MatchStatus::Settled | MatchStatus::Failed => None,
        }
    }

    /// The status a match has when this stage has work on it.
    pub fn input_status(self) -> MatchStatus {
        match self {
            Stage::Generate => MatchStatus::Formed,
            Stage::Judge => MatchStatus::Generated,
            Stage::Settle => MatchStatus::Judged,
        }
    }

    /// The status this stage leaves a match in.
    pub fn output_status(self) -> MatchStatus {
        match self {
            Stage::Generate => MatchStatus::Generated,
            Stage::Judge => MatchStatus::Judged,
            Stage::Settle => MatchStatus::Settled,
        }
    }

    /// The stage after this one.
    pub fn next(self) -> Option<Stage> {
        Stage::for_status(self.output_status())
    }
}

/// A work queue: a pipeline stage's, or the trainers'. Its name is the
/// outbox's `stream` value and the Redis stream's suffix; `field` names
/// the message's one field (the subject's id).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Topic {
    Stage(Stage),
    Train,
}

impl Topic {
    pub const ALL: [Topic; 4] =
        [Topic::Stage(Stage::Generate), Topic::Stage(Stage::Judge), Topic::Stage(Stage::Settle), Topic::Train];

    pub fn name(self) -> &'static str {
        match self {
            Topic::Stage(stage) => stage.name(),
            Topic::Train => "train",
        }
    }

    pub fn parse(name: &str) -> Option<Topic> {
        Topic::ALL.into_iter().find(|t| t.name() == name)
    }

    /// The consumer group that reads it.
    pub fn group(self) -> &'static str {
        match self {
            Topic::Stage(stage) => stage.name(),
            Topic::Train => "trainer",
        }
    }

    /// The message field holding the subject: a match or a job id.
    pub fn field(self) -> &'static str {
        match self {
            Topic::Stage(_) => "match",
            Topic::Train => "job",
        }
    }
}

impl From<Stage> for Topic {
    fn from(stage: Stage) -> Topic {
        Topic::Stage(stage)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_names_are_refused() {
        for s in MatchStatus::ALL {
            assert_eq!(MatchStatus::parse(s.as_str()), Some(s));
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        for s in JobStatus::ALL {
            assert_eq!(JobStatus::parse(s.as_str()), Some(s));
        }
        assert_eq!(MatchStatus::parse("Formed"), None);
        assert_eq!(JobStatus::parse("done"), None);
    }

    #[test]
    fn the_statuses_match_the_database_check_constraints() {
        // The CHECK constraints in migrations/ list exactly these names.
        let sql = include_str!("../../../migrations/20261125000002_arena.sql");
        let names: Vec<&str> = MatchStatus::ALL.iter().map(|s| s.as_str()).collect();
        let check = format!("status in ('{}')", names.join("', '"));
        assert!(sql.contains(&check), "matches.status CHECK differs from MatchStatus: {check}");
        let sql = include_str!("../../../migrations/20261126000001_training.sql");
        let names: Vec<&str> = JobStatus::ALL.iter().map(|s| s.as_str()).collect();
        assert!(sql.contains(&format!("status in ('{}')", names.join("', '"))), "training_jobs.status CHECK");
        let names: Vec<&str> = PolicyMode::ALL.iter().map(|s| s.as_str()).collect();
        assert!(sql.contains(&format!("mode in ('{}')", names.join("', '"))), "training_policies.mode CHECK");
        let names: Vec<&str> = JobTrigger::ALL.iter().map(|s| s.as_str()).collect();
        assert!(sql.contains(&format!("trigger in ('{}')", names.join("', '"))), "training_jobs.trigger CHECK");
    }

    #[test]
    fn stages_chain_formed_to_settled() {
        assert_eq!(Stage::Generate.next(), Some(Stage::Judge));
        assert_eq!(Stage::Judge.next(), Some(Stage::Settle));
        assert_eq!(Stage::Settle.next(), None);
        for stage in Stage::ALL {
            assert_eq!(Stage::for_status(stage.input_status()), Some(stage));
        }
        for topic in Topic::ALL {
            assert_eq!(Topic::parse(topic.name()), Some(topic));
        }
    }
}
