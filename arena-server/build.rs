//! `sqlx::migrate!` embeds `migrations/` at compile time; a new migration
//! file alone changes no Rust source, so say that the folder matters.
fn main() {
    println!("cargo:rerun-if-changed=../migrations");
}
