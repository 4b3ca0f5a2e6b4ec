//! Users: names, passwords, roles and the scopes they hold.
//! `parse` is the only way in; holding one means it is valid.

use super::DomainError;
use serde::{Deserialize, Serialize};

/// A login name: 3–32 characters of letters, digits, `_` and `-`, starting
/// with a letter. Compared without case.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Username(String);

impl Username {
    pub fn parse(raw: &str) -> Result<Username, DomainError> {
        let ok_chars = raw.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        let starts = raw.chars().next().is_some_and(|c| c.is_ascii_alphabetic());
        if !(3..=32).contains(&raw.len()) || !ok_chars || !starts {
            return Err(DomainError::new(
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
    pub fn parse(raw: &str) -> Result<Password, DomainError> {
        let n = raw.chars().count();
        if !(10..=256).contains(&n) {
            return Err(DomainError::new("password", "a password is 10–256 characters"));
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
    pub fn parse(raw: &str) -> Result<Role, DomainError> {
        match raw {
            "player" => Ok(Role::Player),
            "designer" => Ok(Role::Designer),
            "buyer" => Ok(Role::Buyer),
            "admin" => Ok(Role::Admin),
            _ => Err(DomainError::new("role", format!("unknown role {raw:?}: player, designer, buyer or admin"))),
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
            Role::Player => &[Scope::Read, Scope::Play, Scope::Work, Scope::Vote],
            Role::Designer => &[Scope::Read, Scope::Play, Scope::Design, Scope::Work, Scope::Vote],
            Role::Buyer => &[Scope::Read, Scope::Export, Scope::Work, Scope::Vote],
            Role::Admin => {
                &[Scope::Read, Scope::Play, Scope::Design, Scope::Export, Scope::Admin, Scope::Work, Scope::Vote]
            }
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
    /// Run an open runtime worker: lease generation jobs and return results.
    Work,
    /// Take battles and vote on them.
    Vote,
}

impl Scope {
    pub fn parse(raw: &str) -> Result<Scope, DomainError> {
        match raw {
            "read" => Ok(Scope::Read),
            "play" => Ok(Scope::Play),
            "design" => Ok(Scope::Design),
            "export" => Ok(Scope::Export),
            "admin" => Ok(Scope::Admin),
            "work" => Ok(Scope::Work),
            "vote" => Ok(Scope::Vote),
            _ => Err(DomainError::new(
                "scopes",
                format!("unknown scope {raw:?}: read, play, design, export, admin, work or vote"),
            )),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Play => "play",
            Scope::Design => "design",
            Scope::Export => "export",
            Scope::Admin => "admin",
            Scope::Work => "work",
            Scope::Vote => "vote",
        }
    }
}

/// An argon2id hash of `password` in PHC form. Slow on purpose (about
/// 19 MiB and tens of milliseconds): run it off the async executor.
pub fn hash_password(password: &Password) -> Result<String, String> {
    use argon2::password_hash::PasswordHasher;
    argon2::Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| format!("argon2: {e}"))
}

/// Whether `password` matches a PHC hash; a malformed hash matches nothing.
/// As slow as `hash_password`.
pub fn verify_password(hash: &str, password: &str) -> bool {
    use argon2::password_hash::{PasswordVerifier, phc::PasswordHash};
    PasswordHash::new(hash)
        .is_ok_and(|parsed| argon2::Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok())
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
    fn passwords() {
        assert!(Password::parse("short").is_err());
        assert!(Password::parse("long enough!").is_ok());
    }

    #[test]
    fn a_hash_verifies_its_password_only() {
        let hash = hash_password(&Password::parse("correct horse battery").unwrap()).unwrap();
        assert!(verify_password(&hash, "correct horse battery"));
        assert!(!verify_password(&hash, "correct horse battery!"));
        assert!(!verify_password("not a hash", "correct horse battery"));
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
