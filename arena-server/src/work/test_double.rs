//! Test doubles, named as such: stand-ins for parts that a test or a
//! benchmark is not about. `arena serve` never uses them; `Options`
//! takes one only when a caller passes it.

use super::generate::{GenJob, GenOutput, Generator};
use futures_util::future::BoxFuture;

/// A test double for control-plane benchmarks and tests that are not about
/// the model: answers instantly, the reference answer from even slots and a
/// wrong one from odd slots. Never used by `arena serve`.
pub struct StubGenerator;

impl Generator for StubGenerator {
    fn generate(&self, jobs: Vec<GenJob>) -> BoxFuture<'static, Vec<anyhow::Result<GenOutput>>> {
        let outputs = jobs
            .into_iter()
            .map(|job| {
                let text = match (&job.reference, job.slot % 2) {
                    (Some(reference), 0) => format!("The answer is {reference}."),
                    (Some(_), _) => "I am not sure, maybe 7 or 12.".to_owned(),
                    (None, n) => format!("Stub answer {n} to: {}", job.prompt.chars().take(40).collect::<String>()),
                };
                Ok(GenOutput { tokens: text.split_whitespace().count(), text, finish: "end_of_turn".into() })
            })
            .collect();
        Box::pin(std::future::ready(outputs))
    }
}
