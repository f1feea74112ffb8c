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
    validate_openapi()?;
    // The end-to-end binary again with every server on PostgreSQL (the
    // machine's server at 127.0.0.1:5432, a fresh database per app).
    cargo_with(
        &["test", "--package", "roomcast-tests", "--test", "e2e"],
        &[("ROOMCAST_TEST_DATABASE", "postgres")],
    )?;
    web::browser()?;
    Ok(())
}

/// Validates the server's OpenAPI document with `openapi-spec-validator`
/// (PyPI), a validator that is not ours. `.ci/run` installs it in a
/// virtual environment and puts it on `PATH`; elsewhere
/// `pip install openapi-spec-validator` does.
fn validate_openapi() -> anyhow::Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    eprintln!("$ cargo run --quiet --package roomcast -- openapi");
    let output = Command::new(&cargo)
        .args(["run", "--quiet", "--package", "roomcast", "--", "openapi"])
        .output()
        .context("running roomcast openapi")?;
    if !output.status.success() {
        bail!(
            "roomcast openapi failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let dir = tempfile::tempdir().context("creating a temporary directory")?;
    let path = dir.path().join("openapi.json");
    std::fs::write(&path, &output.stdout).with_context(|| format!("writing {}", path.display()))?;
    eprintln!("$ openapi-spec-validator {}", path.display());
    let status = Command::new("openapi-spec-validator")
        .arg(&path)
        .status()
        .context(
            "running openapi-spec-validator (install it: pip install openapi-spec-validator; .ci/run does)",
        )?;
    if !status.success() {
        bail!("the OpenAPI document is not valid ({status})");
    }
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
