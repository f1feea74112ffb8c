//! `cargo xtask bench <scenario>`: benchmarks, run by hand or in a
//! dedicated job, never as timed tests. Each scenario prints a table and
//! writes its numbers, with the git revision, under `bench/results/`.

use anyhow::bail;

mod layer;
mod storage;

pub(crate) fn run(args: &[String]) -> anyhow::Result<()> {
    match args.first().map(String::as_str) {
        None | Some("help") => {
            eprintln!("usage: cargo xtask bench <scenario>\n\nscenarios: layer, storage");
            Ok(())
        }
        Some("layer") => layer::run(&args[1..]),
        Some("storage") => storage::run(&args[1..]),
        Some(other) => bail!("unknown bench scenario {other:?}"),
    }
}
