//! Roomcast's automation: `cargo xtask <task>`. Everything CI and
//! developers run lives here, in Rust, instead of shell scripts.
//!
//! - `cargo xtask ci`: format check, clippy with warnings denied, all tests,
//!   then the end-to-end tests again on PostgreSQL; and the web side (see
//!   `web.rs`): the TypeScript library's unit tests, the check that the
//!   committed web build is what its sources build, and the browser tests.
//! - `cargo xtask web`: only the web side.
//!   This is what `.ci/run` and the README's test command call.
//! - `cargo xtask bench ...`: benchmarks (never timed tests); see `bench/`.
//! - `cargo xtask audit --fixture FILE`: checks a server's stored event log
//!   (every room replayed from seq 0: no gap, no repeat).

use std::process::{Command, ExitCode};

use anyhow::{Context, bail};

mod bench;
mod web;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("ci") => ci(),
        Some("web") => web::check(),
        Some("bench") => bench::run(&args[1..]),
        Some("audit") => bench::audit_command(&args[1..]),
        Some("trivial-server") => bench::trivial_server(&args[1..]),
        _ => {
            eprintln!("usage: cargo xtask <ci | web | bench ... | audit ...>");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The checks a change must pass to land.
fn ci() -> anyhow::Result<()> {
    cargo(&["fmt", "--all", "--", "--check"])?;
    // Quick and independent of the Rust build: fail early.
    web::unit_and_stale()?;
    cargo(&[
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ])?;
    cargo(&["test", "--workspace", "--all-targets"])?;
    // The end-to-end binary again with every server on PostgreSQL (the
    // machine's server at 127.0.0.1:5432, a fresh database per app).
    cargo_with(
        &["test", "--package", "roomcast-tests", "--test", "e2e"],
        &[("ROOMCAST_TEST_DATABASE", "postgres")],
    )?;
    web::browser()?;
    Ok(())
}

/// Runs cargo with the same toolchain that runs us.
pub(crate) fn cargo(args: &[&str]) -> anyhow::Result<()> {
    cargo_with(args, &[])
}

/// Runs cargo with extra environment variables.
pub(crate) fn cargo_with(args: &[&str], env: &[(&str, &str)]) -> anyhow::Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let shown: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v} ")).collect();
    eprintln!("$ {}cargo {}", shown.concat(), args.join(" "));
    let status = Command::new(&cargo)
        .args(args)
        .envs(env.iter().copied())
        .status()
        .with_context(|| format!("running cargo {}", args.join(" ")))?;
    if !status.success() {
        bail!("cargo {} failed ({status})", args.join(" "));
    }
    Ok(())
}
