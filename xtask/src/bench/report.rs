//! Tables on stdout and one JSON file per run under `bench/results/`.

use std::path::PathBuf;
use std::process::Command;

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

/// Writes `bench/results/<scenario>-<unix time>.json` and returns its path.
pub fn write(
    scenario: &str,
    server: &str,
    params: Value,
    results: Value,
) -> anyhow::Result<PathBuf> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("xtask has no parent folder")?
        .to_path_buf();
    let dir = root.join("bench").join("results");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let (rev, dirty) = git_revision(&root);
    let doc = json!({
        "scenario": scenario,
        "server": server,
        "git_revision": rev,
        "git_dirty": dirty,
        "unix_time": now,
        "machine": {"cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)},
        "params": params,
        "results": results,
    });
    let path = dir.join(format!("{scenario}-{now}.json"));
    std::fs::write(&path, serde_json::to_string_pretty(&doc)? + "\n")
        .with_context(|| format!("writing {}", path.display()))?;
    println!("results: {}", path.display());
    Ok(path)
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
