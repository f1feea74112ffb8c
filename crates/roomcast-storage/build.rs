//! Rebuilds this crate when a migration changes. Why: `sqlx::migrate!`
//! embeds `migrations/` at compile time, and cargo does not watch that
//! folder by itself, so a new migration file alone left a stale set
//! embedded in an incremental build (sqlx's documented fix).

fn main() {
    println!("cargo:rerun-if-changed=../../migrations");
}
