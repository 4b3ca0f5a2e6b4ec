//! `arena user create`.

use super::args::{UserCreateArgs, UserRole, UserRoleArgs};
use crate::app::config::Settings;
use crate::domain::user::{Password, Role, Username};
use crate::store::users;
use std::io::BufRead;

impl From<UserRole> for Role {
    fn from(role: UserRole) -> Role {
        match role {
            UserRole::Player => Role::Player,
            UserRole::Designer => Role::Designer,
            UserRole::Buyer => Role::Buyer,
            UserRole::Admin => Role::Admin,
        }
    }
}

/// Gives a user another role; an admin is made with `user create`.
pub async fn set_role(args: &UserRoleArgs, settings: &Settings) -> anyhow::Result<()> {
    let pool = &super::pool(settings).await?;
    let (username, role) = (args.username.as_str(), Role::from(args.role));
    anyhow::ensure!(role != Role::Admin, "admins are made with `arena user create --role admin`");
    let user = users::set_role(pool, username, role).await?.ok_or_else(|| anyhow::anyhow!("no user {username:?}"))?;
    println!("{} is now a {}", user.username, role.as_str());
    Ok(())
}

/// Creates a user; the password comes from ARENA_NEW_PASSWORD, or the
/// first line of stdin.
pub async fn create(args: &UserCreateArgs, settings: &Settings) -> anyhow::Result<()> {
    let pool = &super::pool(settings).await?;
    let username = Username::parse(&args.username)?;
    let role = Role::from(args.role);
    let password = match std::env::var("ARENA_NEW_PASSWORD") {
        Ok(p) => p,
        Err(_) => {
            eprintln!("password (one line on stdin):");
            let mut line = String::new();
            std::io::stdin().lock().read_line(&mut line)?;
            line.trim_end_matches(['\r', '\n']).to_owned()
        }
    };
    let password = Password::parse(&password)?;
    let user = users::create_user(pool, &username, password, role, settings.arena.starting_credits).await?;
    println!("created {} ({}) {}", user.username, role.as_str(), user.id);
    Ok(())
}
