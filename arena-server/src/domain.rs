//! Domain values with one way in: `parse` checks, and holding one means it
//! is valid. The JSON API and the CLI share them.

use crate::error::ApiError;
use serde::{Deserialize, Serialize};

/// A login name: 3–32 characters of letters, digits, `_` and `-`, starting
/// with a letter. Compared without case.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Username(String);

impl Username {
    pub fn parse(raw: &str) -> Result<Username, ApiError> {
        let ok_chars = raw.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        let starts = raw.chars().next().is_some_and(|c| c.is_ascii_alphabetic());
        if !(3..=32).contains(&raw.len()) || !ok_chars || !starts {
            return Err(ApiError::invalid(
                "username",
                "a username is 3–32 characters of letters, digits, '_' and '-', starting with a letter",
            ));
        }
        Ok(Username(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A password as given: 10–256 characters.
pub struct Password(String);

impl Password {
    pub fn parse(raw: &str) -> Result<Password, ApiError> {
        let n = raw.chars().count();
        if !(10..=256).contains(&n) {
            return Err(ApiError::invalid("password", "a password is 10–256 characters"));
        }
        Ok(Password(raw.to_owned()))
    }

    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(..)")
    }
}

/// What a user may do on the platform.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Enters agents into Spaces.
    Player,
    /// Writes Spaces; may also enter agents.
    Designer,
    /// Exports preference pairs.
    Buyer,
    /// Everything, and other users' data.
    Admin,
}

impl Role {
    pub fn parse(raw: &str) -> Result<Role, ApiError> {
        match raw {
            "player" => Ok(Role::Player),
            "designer" => Ok(Role::Designer),
            "buyer" => Ok(Role::Buyer),
            "admin" => Ok(Role::Admin),
            _ => Err(ApiError::invalid("role", format!("unknown role {raw:?}: player, designer, buyer or admin"))),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Player => "player",
            Role::Designer => "designer",
            Role::Buyer => "buyer",
            Role::Admin => "admin",
        }
    }

    /// The scopes this role can hold (and grant to its tokens).
    pub fn scopes(self) -> &'static [Scope] {
        match self {
            Role::Player => &[Scope::Read, Scope::Play],
            Role::Designer => &[Scope::Read, Scope::Play, Scope::Design],
            Role::Buyer => &[Scope::Read, Scope::Export],
            Role::Admin => &[Scope::Read, Scope::Play, Scope::Design, Scope::Export, Scope::Admin],
        }
    }
}

/// What an API token may be used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Read one's own and public data.
    Read,
    /// Create agents and versions, enter Spaces.
    Play,
    /// Publish Spaces and versions.
    Design,
    /// Export preference pairs.
    Export,
    /// Administer users and credits.
    Admin,
}

impl Scope {
    pub fn parse(raw: &str) -> Result<Scope, ApiError> {
        match raw {
            "read" => Ok(Scope::Read),
            "play" => Ok(Scope::Play),
            "design" => Ok(Scope::Design),
            "export" => Ok(Scope::Export),
            "admin" => Ok(Scope::Admin),
            _ => {
                Err(ApiError::invalid("scopes", format!("unknown scope {raw:?}: read, play, design, export or admin")))
            }
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Play => "play",
            Scope::Design => "design",
            Scope::Export => "export",
            Scope::Admin => "admin",
        }
    }
}

/// An agent's display name: 1–64 printable characters, no leading or
/// trailing space.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AgentName(String);

impl AgentName {
    pub fn parse(raw: &str) -> Result<AgentName, ApiError> {
        let n = raw.chars().count();
        if !(1..=64).contains(&n) || raw.trim() != raw || raw.chars().any(char::is_control) {
            return Err(ApiError::invalid(
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
pub fn parse_system_prompt(raw: &str) -> Result<String, ApiError> {
    if raw.chars().count() > 4_000 {
        return Err(ApiError::invalid("system_prompt", "a system prompt is at most 4,000 characters"));
    }
    if raw.chars().any(|c| c.is_control() && c != '\n' && c != '\t' && c != '\r') {
        return Err(ApiError::invalid("system_prompt", "a system prompt may not contain control characters"));
    }
    Ok(raw.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames() {
        for good in ["ada", "Ada_Lovelace-2", "x23"] {
            assert!(Username::parse(good).is_ok(), "{good}");
        }
        for bad in ["", "ab", "1abc", "_abc", "a b c", "ädam", "a;drop", &"a".repeat(33)] {
            assert!(Username::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn passwords_and_names() {
        assert!(Password::parse("short").is_err());
        assert!(Password::parse("long enough!").is_ok());
        assert!(AgentName::parse(" padded").is_err());
        assert!(AgentName::parse("bell\u{7}").is_err());
        assert!(AgentName::parse("Calculator 🧮").is_ok());
        assert!(parse_system_prompt("line\nline").is_ok());
        assert!(parse_system_prompt("esc\u{1b}[31m").is_err());
    }

    #[test]
    fn role_scopes_nest() {
        for role in [Role::Player, Role::Designer, Role::Buyer] {
            for scope in role.scopes() {
                assert!(Role::Admin.scopes().contains(scope));
            }
        }
        assert!(!Role::Player.scopes().contains(&Scope::Export));
        assert!(!Role::Buyer.scopes().contains(&Scope::Play));
    }
}
