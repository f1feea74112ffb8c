//! Tables on stdout, and one JSON-lines file per run under `bench/results/`.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use anyhow::Context;
use hdrhistogram::Histogram;
use serde_json::{Value, json};

/// Latency percentiles in milliseconds, from a histogram in microseconds.
pub fn latency(h: &Histogram<u64>) -> Value {
    let ms = |us: u64| (us as f64) / 1000.0;
    json!({
        "count": h.len(),
        "p50_ms": ms(h.value_at_quantile(0.50)),
        "p90_ms": ms(h.value_at_quantile(0.90)),
        "p99_ms": ms(h.value_at_quantile(0.99)),
        "p99_9_ms": ms(h.value_at_quantile(0.999)),
        "max_ms": ms(h.max()),
    })
}

/// Prints rows under headers, columns aligned.
pub fn table(title: &str, headers: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let line = |cells: Vec<&str>| {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:>w$}"))
            .collect::<Vec<_>>()
            .join("  ")
    };
    println!("\n{title}");
    println!("{}", line(headers.to_vec()));
    for row in rows {
        println!("{}", line(row.iter().map(String::as_str).collect()));
    }
}

pub fn f1(v: f64) -> String {
    format!("{v:.1}")
}

pub fn ms(latency: &Value, key: &str) -> String {
    latency[key]
        .as_f64()
        .map_or_else(|| "-".into(), |v| format!("{v:.2}"))
}

/// Appends one scenario's numbers to this run's file and returns its path.
///
/// A run (one `cargo xtask bench ...` process, `all` included) is one
/// JSON-lines file, `bench/results/<UTC time>-<revision>.jsonl`: a first
/// line with the revision and the machine's facts, then a line per
/// scenario as it finishes. bench/README.md says how to read them.
pub fn write(
    scenario: &str,
    server: &str,
    params: Value,
    results: Value,
) -> anyhow::Result<PathBuf> {
    let path = run_file()?;
    let line = json!({
        "scenario": scenario,
        "server": server,
        "unix_time": unix_now(),
        "params": params,
        "results": results,
    });
    append(&path, &line)?;
    println!("results: {}", path.display());
    Ok(path)
}

/// This process's run file, created with its header line on first use.
fn run_file() -> anyhow::Result<PathBuf> {
    static RUN: OnceLock<PathBuf> = OnceLock::new();
    if let Some(path) = RUN.get() {
        return Ok(path.clone());
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("xtask has no parent folder")?
        .to_path_buf();
    let dir = root.join("bench").join("results");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let (rev, dirty) = git_revision(&root);
    let now = unix_now();
    let stamp = time::OffsetDateTime::from_unix_timestamp(now as i64)
        .ok()
        .and_then(|t| {
            t.format(time::macros::format_description!(
                "[year]-[month]-[day]T[hour][minute][second]"
            ))
            .ok()
        })
        .unwrap_or_else(|| now.to_string());
    let short: String = rev.chars().take(10).collect();
    let path = dir.join(format!("{stamp}-{short}.jsonl"));
    let header = json!({
        "run": {
            "git_revision": rev,
            "git_dirty": dirty,
            "unix_time": now,
            "command": std::env::args().skip(1).collect::<Vec<_>>().join(" "),
            "machine": machine(),
        }
    });
    append(&path, &header)?;
    Ok(RUN.get_or_init(|| path).clone())
}

fn append(path: &std::path::Path, line: &Value) -> anyhow::Result<()> {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    writeln!(file, "{}", serde_json::to_string(line)?)
        .with_context(|| format!("writing {}", path.display()))
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

/// What the numbers depend on besides the code: cores, CPU, memory, kernel.
fn machine() -> Value {
    let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
    let field = |text: &str, name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split(':').nth(1))
            .map(|v| v.trim().to_owned())
    };
    let cpuinfo = read("/proc/cpuinfo");
    let meminfo = read("/proc/meminfo");
    json!({
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "cpu_model": field(&cpuinfo, "model name"),
        "memory": field(&meminfo, "MemTotal"),
        "kernel": read("/proc/sys/kernel/osrelease").trim(),
    })
}

fn git_revision(root: &std::path::Path) -> (String, bool) {
    let run = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .current_dir(root)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    let rev = run(&["rev-parse", "HEAD"]).unwrap_or_else(|| "unknown".into());
    let dirty =
        run(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    (rev, dirty)
}
