//! The web side of CI: the TypeScript library (`clients/typescript`), the
//! Vue app (`web/`) and its browser tests.
//!
//! - The library's unit tests (node's test runner), and a type check of
//!   the app (`vue-tsc`).
//! - The committed build (`web/dist`, embedded in the binary so that
//!   `cargo run` needs no Node) must be exactly what the sources build: the
//!   app is built again into a temporary folder and compared file by file.
//! - The Playwright suite, in Debian's Chromium, against the workspace's
//!   debug `roomcast` binary (each test starts its own servers).
//!
//! Dependencies are installed with `npm ci` where `node_modules` is missing
//! (`.ci/run` does it up front; this covers a developer's first run).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

use crate::cargo;

/// Everything: unit tests, stale-build check, browser tests.
pub(crate) fn check() -> anyhow::Result<()> {
    unit_and_stale()?;
    browser()
}

/// The library's unit tests, the app's type check and the stale-build
/// check (seconds).
pub(crate) fn unit_and_stale() -> anyhow::Result<()> {
    let root = workspace_root()?;
    let library = root.join("clients/typescript");
    let web = root.join("web");
    npm_ci_if_missing(&library)?;
    npm_ci_if_missing(&web)?;
    npm(&library, &["test"], &[])?;
    // Types of the app's components and tests (the build only strips them).
    npm(&web, &["run", "typecheck"], &[])?;
    stale_check(&web)
}

/// The Playwright suite against a freshly built debug server.
pub(crate) fn browser() -> anyhow::Result<()> {
    let root = workspace_root()?;
    let web = root.join("web");
    npm_ci_if_missing(&web)?;
    cargo(&["build", "--package", "roomcast", "--bin", "roomcast"])?;
    let binary = target_dir()?.join("debug").join("roomcast");
    let binary = binary
        .to_str()
        .context("target path is not UTF-8")?
        .to_owned();
    npm(
        &web,
        &["exec", "--", "playwright", "test"],
        &[
            ("ROOMCAST_BIN", binary.as_str()),
            ("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1"),
        ],
    )
}

/// Builds the app into a temporary folder and compares it with `web/dist`.
fn stale_check(web: &Path) -> anyhow::Result<()> {
    let out = tempfile::tempdir().context("temporary folder")?;
    let out_dir = out.path().to_str().context("temp path is not UTF-8")?;
    npm(
        web,
        &[
            "exec",
            "--",
            "vite",
            "build",
            "--logLevel",
            "warn",
            "--emptyOutDir",
            "--outDir",
            out_dir,
        ],
        &[],
    )?;
    let fresh = files(out.path())?;
    let committed = files(&web.join("dist"))?;
    let mut problems = Vec::new();
    for (name, bytes) in &fresh {
        match committed.get(name) {
            None => problems.push(format!("missing from web/dist: {name}")),
            Some(old) if old != bytes => problems.push(format!("differs: web/dist/{name}")),
            Some(_) => {}
        }
    }
    for name in committed.keys().filter(|n| !fresh.contains_key(*n)) {
        problems.push(format!("no longer built: web/dist/{name}"));
    }
    if !problems.is_empty() {
        bail!(
            "the committed web build is stale ({}); run `npm run build` in web/ and commit web/dist",
            problems.join(", ")
        );
    }
    eprintln!("web/dist is up to date ({} files)", fresh.len());
    Ok(())
}

/// Every file under `dir`, by path relative to it.
fn files(dir: &Path) -> anyhow::Result<BTreeMap<String, Vec<u8>>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(current) = stack.pop() {
        for entry in
            std::fs::read_dir(&current).with_context(|| format!("reading {}", current.display()))?
        {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let name = path.strip_prefix(dir)?.to_string_lossy().replace('\\', "/");
                out.insert(name, std::fs::read(&path)?);
            }
        }
    }
    Ok(out)
}

fn npm_ci_if_missing(dir: &Path) -> anyhow::Result<()> {
    if dir.join("node_modules").is_dir() {
        return Ok(());
    }
    npm(
        dir,
        &["ci", "--no-audit", "--no-fund"],
        &[("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")],
    )
}

fn npm(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> anyhow::Result<()> {
    eprintln!("$ (cd {}) npm {}", dir.display(), args.join(" "));
    let status = Command::new("npm")
        .args(args)
        .current_dir(dir)
        .envs(env.iter().copied())
        .status()
        .with_context(|| format!("running npm {} (is Node.js installed?)", args.join(" ")))?;
    if !status.success() {
        bail!(
            "npm {} in {} failed ({status})",
            args.join(" "),
            dir.display()
        );
    }
    Ok(())
}

/// The workspace root: xtask's own manifest folder's parent.
fn workspace_root() -> anyhow::Result<PathBuf> {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .context("xtask has no parent folder")
}

/// Where cargo puts builds (honours CARGO_TARGET_DIR and config files).
fn target_dir() -> anyhow::Result<PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .output()
        .context("running cargo metadata")?;
    if !output.status.success() {
        bail!("cargo metadata failed ({})", output.status);
    }
    let metadata: serde_json::Value =
        serde_json::from_slice(&output.stdout).context("reading cargo metadata")?;
    metadata["target_directory"]
        .as_str()
        .map(PathBuf::from)
        .context("cargo metadata has no target_directory")
}
