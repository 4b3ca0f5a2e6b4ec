//! Agents: their names, system prompts and sampling settings.

use super::DomainError;
use agent_runtime::sampling::SamplingParams;
use serde::{Deserialize, Serialize};

/// An agent's display name: 1–64 printable characters, no leading or
/// trailing space.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AgentName(String);

impl AgentName {
    pub fn parse(raw: &str) -> Result<AgentName, DomainError> {
        let n = raw.chars().count();
        if !(1..=64).contains(&n) || raw.trim() != raw || raw.chars().any(char::is_control) {
            return Err(DomainError::new(
                "name",
                "an agent name is 1–64 characters, no control characters, no leading or trailing space",
            ));
        }
        Ok(AgentName(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A system prompt: at most 4,000 characters, no control characters but
/// newlines and tabs.
pub fn parse_system_prompt(raw: &str) -> Result<String, DomainError> {
    if raw.chars().count() > 4_000 {
        return Err(DomainError::new("system_prompt", "a system prompt is at most 4,000 characters"));
    }
    if raw.chars().any(|c| c.is_control() && c != '\n' && c != '\t' && c != '\r') {
        return Err(DomainError::new("system_prompt", "a system prompt may not contain control characters"));
    }
    Ok(raw.to_owned())
}

/// Sampling an agent chooses; the Space sets the length.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentSampling {
    pub temperature: f32,
    pub top_k: usize,
    pub top_p: f32,
    pub repetition_penalty: f32,
    pub stop: Vec<String>,
    pub seed: u64,
}

impl Default for AgentSampling {
    fn default() -> AgentSampling {
        let d = SamplingParams::default();
        AgentSampling {
            temperature: d.temperature,
            top_k: d.top_k,
            top_p: d.top_p,
            repetition_penalty: d.repetition_penalty,
            stop: Vec::new(),
            seed: 0,
        }
    }
}

impl AgentSampling {
    /// The runtime's parameters for one match.
    pub fn params(&self, max_new_tokens: usize, seed: u64) -> SamplingParams {
        SamplingParams {
            temperature: self.temperature,
            top_k: self.top_k,
            top_p: self.top_p,
            repetition_penalty: self.repetition_penalty,
            max_new_tokens,
            stop: self.stop.clone(),
            seed,
            ..SamplingParams::default()
        }
    }

    pub fn check(&self) -> Result<(), DomainError> {
        if self.stop.len() > 8 || self.stop.iter().any(|s| s.chars().count() > 64) {
            return Err(DomainError::new("sampling.stop", "at most 8 stop strings of at most 64 characters"));
        }
        self.params(1, 0).validate().map_err(|m| DomainError::new("sampling", m))
    }
}

/// A version note: at most 500 characters.
pub fn parse_note(raw: &str) -> Result<String, DomainError> {
    if raw.chars().count() > 500 {
        return Err(DomainError::new("note", "a note is at most 500 characters"));
    }
    Ok(raw.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_prompts() {
        assert!(AgentName::parse(" padded").is_err());
        assert!(AgentName::parse("bell\u{7}").is_err());
        assert!(AgentName::parse("Calculator 🧮").is_ok());
        assert!(parse_system_prompt("line\nline").is_ok());
        assert!(parse_system_prompt("esc\u{1b}[31m").is_err());
    }

    #[test]
    fn sampling_is_checked() {
        assert!(AgentSampling::default().check().is_ok());
        let many = AgentSampling { stop: vec!["x".into(); 9], ..AgentSampling::default() };
        assert_eq!(many.check().unwrap_err().field, "sampling.stop");
        let hot = AgentSampling { temperature: -1.0, ..AgentSampling::default() };
        assert_eq!(hot.check().unwrap_err().field, "sampling");
    }
}
