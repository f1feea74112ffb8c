//! The `roomcast` binary's library half: configuration, the server's
//! start-up and shutdown, and the fixture and keys commands. `main.rs` only parses
//! the command line, installs logging and waits for signals, so the
//! end-to-end tests can start a real server in-process with the exact code
//! the binary runs.
//!
//! This is the only place that reads environment variables (through clap)
//! and the only crate that knows every other crate.

pub mod cli;
mod fixture;
pub mod keys;
pub mod logging;
mod private_files;
mod secret;
mod server;

pub use cli::{Cli, Command, CommonArgs, KeysArgs, KeysCommand, LogFormat, MigrateArgs, ServeArgs};
pub use fixture::{Fixture, FixtureMember, FixtureRoom, fixture};
pub use server::{Server, open_storage, open_storage_at};
