//! The process's log subscriber: text for people or JSON for collectors,
//! to stderr, filtered by the defaults plus `RUST_LOG`.

use tracing::Subscriber;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::util::SubscriberInitExt;

use crate::cli::LogFormat;

/// What is logged when `RUST_LOG` says nothing: our info lines, and only
/// warnings from sqlx (its info level logs every statement).
pub const DEFAULT_FILTER: &str = "info,sqlx=warn";

/// The defaults with `RUST_LOG`'s directives after them: a later directive
/// for the same target wins, so `RUST_LOG=debug` raises the default level
/// and keeps `sqlx=warn`, and `RUST_LOG=sqlx=debug` lowers only sqlx's.
pub fn filter(rust_log: Option<&str>) -> EnvFilter {
    let directives = match rust_log.map(str::trim).filter(|l| !l.is_empty()) {
        Some(extra) => format!("{DEFAULT_FILTER},{extra}"),
        None => DEFAULT_FILTER.to_owned(),
    };
    EnvFilter::builder().parse_lossy(directives)
}

/// The subscriber the binary installs, writing to `writer` (tests give a
/// buffer). In JSON, each line is one object: the event's fields at the
/// top, and the request's span (method, route, request id, user id) under
/// `span`.
pub fn subscriber<W>(
    format: LogFormat,
    rust_log: Option<&str>,
    writer: W,
) -> Box<dyn Subscriber + Send + Sync>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter(rust_log))
        .with_writer(writer);
    match format {
        LogFormat::Text => Box::new(
            builder
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .finish(),
        ),
        LogFormat::Json => Box::new(
            builder
                .json()
                .flatten_event(true)
                .with_current_span(true)
                .with_span_list(false)
                .finish(),
        ),
    }
}

/// Installs the subscriber for the whole process, to stderr.
pub fn init(format: LogFormat) {
    let rust_log = std::env::var("RUST_LOG").ok();
    let _ = subscriber(format, rust_log.as_deref(), std::io::stderr).try_init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rust_log_adds_to_the_defaults() {
        let shown = filter(Some("debug")).to_string();
        assert!(shown.contains("sqlx=warn"), "{shown}");
        assert!(shown.contains("debug"), "{shown}");
        assert_eq!(filter(None).to_string(), filter(Some(" ")).to_string());
        let shown = filter(Some("sqlx=debug")).to_string();
        assert!(shown.contains("sqlx=debug"), "{shown}");
        assert!(!shown.contains("sqlx=warn"), "{shown}");
    }
}
