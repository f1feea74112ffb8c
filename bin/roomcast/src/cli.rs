//! The command line. Every flag has an environment fallback; operators and
//! scripts rely on these names.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use roomcast_domain::{Scope, ScopeError};
use roomcast_storage::CommitPolicy;

#[derive(Debug, Parser)]
#[command(name = "roomcast", version, about = "Real-time room chat server")]
pub struct Cli {
    /// Log lines as `text` (for people) or `json` (one object a line, for
    /// collectors). `RUST_LOG` adds filters to the default `info,sqlx=warn`.
    #[arg(long, global = true, env = "ROOMCAST_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

// The server's settings make `Serve` large; a command is parsed once.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server.
    Serve(ServeArgs),
    /// Seed users, rooms and participants and print a benchmark fixture
    /// (docs/fixture.md) with valid tokens.
    Fixture(FixtureArgs),
    /// Create or upgrade the database schema, then exit.
    Migrate(MigrateArgs),
    /// Print the HTTP API's OpenAPI document (as served at
    /// /api/openapi.json), then exit.
    Openapi,
    /// Make, list and revoke service keys: credentials with which a
    /// program posts into any room as a bot user (`Authorization: Bearer
    /// rk_...`).
    Keys(KeysArgs),
}

#[derive(Debug, Clone, Args)]
pub struct KeysArgs {
    #[command(subcommand)]
    pub command: KeysCommand,
}

#[derive(Debug, Clone, Subcommand)]
pub enum KeysCommand {
    /// Make a key and its bot user NAME; prints the key, once: only its
    /// hash is stored.
    Create {
        /// The key's name, also its bot user's username (lowercase letters,
        /// digits, `-` and `_`); no user may have it already.
        name: String,
        /// What the key may do: `publish` (post, edit and delete messages
        /// in any room) and/or `read` (any room's history). Repeat the flag
        /// or separate with commas.
        #[arg(long = "scope", required = true, value_delimiter = ',', value_parser = parse_scope)]
        scopes: Vec<Scope>,
        #[command(flatten)]
        database: MigrateArgs,
    },
    /// List every key (never the keys themselves), revoked ones included.
    List {
        #[command(flatten)]
        database: MigrateArgs,
    },
    /// Revoke the key NAME: it is refused from then on, on every node.
    Revoke {
        name: String,
        #[command(flatten)]
        database: MigrateArgs,
    },
}

fn parse_scope(s: &str) -> Result<Scope, ScopeError> {
    Scope::parse(s)
}

/// Where the database is: all `migrate` and `keys` need.
#[derive(Debug, Clone, Args)]
pub struct MigrateArgs {
    /// Where the embedded database lives.
    #[arg(long, env = "ROOMCAST_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// `sqlite:` or `postgres://` URL; default: `roomcast.db` (SQLite) in
    /// the data directory.
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: Option<String>,
}

impl MigrateArgs {
    /// The database URL in force.
    pub fn database_url(&self) -> String {
        database_url(&self.data_dir, self.database_url.as_deref())
    }
}

/// The configured URL, or the embedded database in the data directory.
fn database_url(data_dir: &std::path::Path, configured: Option<&str>) -> String {
    match configured {
        Some(url) => url.to_owned(),
        None => format!("sqlite://{}", data_dir.join("roomcast.db").display()),
    }
}

/// What every command needs to find the server's data and keys.
#[derive(Debug, Clone, Args)]
pub struct CommonArgs {
    /// Address to listen on (and to put in fixture URLs).
    #[arg(long, env = "ROOMCAST_BIND", default_value = "127.0.0.1:8080")]
    pub bind: SocketAddr,
    /// Where the embedded database and the generated JWT secret live.
    #[arg(long, env = "ROOMCAST_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// `sqlite:` or `postgres://` URL; default: `roomcast.db` (SQLite) in
    /// the data directory. A PostgreSQL database must exist; its schema is
    /// migrated at start and by `roomcast migrate`.
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: Option<String>,
    /// `postgres://` URL of a streaming read replica of that database:
    /// history pages and participant lists read it, never the reads that
    /// must see the latest commit (resume, admission, writes), and a
    /// replica that fails or lags behind a requested message is read
    /// around, from the primary. Unset: everything reads the primary.
    #[arg(long, env = "ROOMCAST_DATABASE_READ_URL")]
    pub database_read_url: Option<String>,
    /// HS256 signing secret; default: generated once and kept in the data
    /// directory.
    #[arg(long, env = "ROOMCAST_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// PostgreSQL writer connections per node, each committing the batches
    /// of its share of the rooms (a room always goes to the same one), so
    /// different rooms' batches commit in parallel. SQLite has one writer.
    #[arg(long, env = "ROOMCAST_DATABASE_WRITERS", default_value_t = CommitPolicy::default().writers)]
    pub database_writers: usize,
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Channel layer URL: `redis://host:port` (one Redis) or
    /// `redis-cluster://host:port,host:port` (Redis Cluster, sharded
    /// pub/sub); unset: the in-memory layer.
    #[arg(long, env = "REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,
    /// Start even if Redis is unreachable, and connect when it comes up
    /// (`/readyz` answers 503 until then). Without it, an unreachable
    /// Redis at start-up is an error.
    #[arg(long, env = "ROOMCAST_REDIS_WAIT")]
    pub redis_wait: bool,
    /// Prefix of this fleet's Redis channel names, so fleets sharing one
    /// Redis never hear each other.
    #[arg(long, env = "ROOMCAST_REDIS_PREFIX", default_value = "roomcast:")]
    pub redis_prefix: String,
    /// Comma-separated origins allowed to open WebSockets, or `*`;
    /// default: the server's own http:// origin.
    #[arg(long, env = "ROOMCAST_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Vec<String>,
    /// Open sockets beyond which handshakes are refused with 503; default:
    /// below the process's descriptor limit (`RLIMIT_NOFILE`, raised to its
    /// hard limit at start), leaving room for HTTP and the database.
    #[arg(long, env = "ROOMCAST_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Sockets one user may have open on a node; beyond, handshakes get
    /// 429. 0: no cap.
    #[arg(long, env = "ROOMCAST_MAX_CONNECTIONS_PER_USER", default_value_t = 20)]
    pub max_connections_per_user: usize,
    /// How shutdown ends sockets: `frame` (close 1001) or `drop` (TCP close
    /// without a frame, so seed clients reconnect).
    #[arg(long, env = "ROOMCAST_SHUTDOWN_MODE", value_enum, default_value_t = ShutdownModeArg::Frame)]
    pub shutdown_mode: ShutdownModeArg,
    /// Lifetime of access tokens issued by login and refresh, in seconds.
    #[arg(long, env = "ROOMCAST_ACCESS_TOKEN_TTL", default_value_t = 600)]
    pub access_token_ttl: u64,
    /// Mark the `JWT` cookie `Secure` (serve behind HTTPS).
    #[arg(long, env = "ROOMCAST_SECURE_COOKIES")]
    pub secure_cookies: bool,
    /// A socket whose peer takes longer than this to accept a write is a
    /// slow consumer: it is closed (1013) and resumes with `since`.
    #[arg(long, env = "ROOMCAST_WRITE_TIMEOUT_MS", default_value_t = 10_000)]
    pub write_timeout_ms: u64,
    /// Kernel send buffer per connection in bytes (`SO_SNDBUF`); unset:
    /// the kernel's autotuning.
    #[arg(long, env = "ROOMCAST_TCP_SEND_BUFFER")]
    pub tcp_send_buffer: Option<usize>,
    /// Keep each room's event log (what `?since=` resumes from) this many
    /// days; unset: forever. Messages themselves are kept either way.
    #[arg(long, env = "ROOMCAST_EVENT_RETENTION_DAYS")]
    pub event_retention_days: Option<u32>,
    /// Messages per second one user may send, sustained, over all their
    /// sockets and HTTP posts together; beyond, a frame gets a
    /// `rate_limited` error (HTTP: 429) and nothing is stored. 0 turns every
    /// per-user limit off (typing's too).
    #[arg(long, env = "ROOMCAST_RATE_LIMIT", default_value_t = 10)]
    pub rate_limit: u32,
    /// Messages one user may send at once before the rate applies.
    #[arg(long, env = "ROOMCAST_RATE_BURST", default_value_t = 20)]
    pub rate_burst: u32,
    /// Typing events relayed per user: at most one per this many
    /// milliseconds (0: not limited).
    #[arg(long, env = "ROOMCAST_TYPING_INTERVAL_MS", default_value_t = 2000)]
    pub typing_interval_ms: u64,
    /// A socket whose frames are refused at twice the rate or more for this
    /// many seconds is closed with 1008 (0: never).
    #[arg(long, env = "ROOMCAST_ABUSE_CLOSE_SECS", default_value_t = 10)]
    pub abuse_close_secs: u64,
    /// Seconds an HTTP connection may take to send a request head, and may
    /// stay idle between keep-alive requests.
    #[arg(long, env = "ROOMCAST_HEADER_TIMEOUT_SECS", default_value_t = 10)]
    pub header_timeout_secs: u64,
    /// Seconds an HTTP request (body and handling) may take (408 beyond).
    #[arg(long, env = "ROOMCAST_REQUEST_TIMEOUT_SECS", default_value_t = 30)]
    pub request_timeout_secs: u64,
    /// Password hashes and checks run at once; default: the number of cores.
    #[arg(long, env = "ROOMCAST_PASSWORD_CONCURRENCY")]
    pub password_concurrency: Option<usize>,
    /// Comma-separated origins whose pages may call the HTTP API with
    /// credentials (CORS), e.g. `https://app.example.com`; unset: CORS off.
    #[arg(long, env = "ROOMCAST_CORS_ORIGINS", value_delimiter = ',')]
    pub cors_origins: Vec<String>,
    /// Serve `/metrics` on this address only (e.g. `10.0.0.5:9090`, where
    /// only Prometheus reaches), and no longer on `--bind`; unset: on
    /// `--bind`.
    #[arg(long, env = "ROOMCAST_METRICS_BIND")]
    pub metrics_bind: Option<SocketAddr>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ShutdownModeArg {
    Frame,
    Drop,
}

#[derive(Debug, Clone, Args)]
pub struct FixtureArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Number of rooms (M).
    #[arg(long)]
    pub rooms: usize,
    /// Members per room (K), host included.
    #[arg(long)]
    pub members: usize,
}

impl ServeArgs {
    /// Settings with defaults, for embedding and tests.
    pub fn with_data_dir(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            common: CommonArgs {
                bind: SocketAddr::from(([127, 0, 0, 1], 8080)),
                data_dir: data_dir.into(),
                database_url: None,
                database_read_url: None,
                jwt_secret: None,
                database_writers: CommitPolicy::default().writers,
            },
            redis_url: None,
            redis_wait: false,
            redis_prefix: "roomcast:".into(),
            allowed_origins: Vec::new(),
            max_connections: None,
            max_connections_per_user: 20,
            shutdown_mode: ShutdownModeArg::Frame,
            access_token_ttl: 600,
            secure_cookies: false,
            write_timeout_ms: 10_000,
            tcp_send_buffer: None,
            event_retention_days: None,
            rate_limit: 10,
            rate_burst: 20,
            typing_interval_ms: 2000,
            abuse_close_secs: 10,
            header_timeout_secs: 10,
            request_timeout_secs: 30,
            password_concurrency: None,
            cors_origins: Vec::new(),
            metrics_bind: None,
        }
    }
}

impl CommonArgs {
    /// The database URL in force.
    pub fn database_url(&self) -> String {
        database_url(&self.data_dir, self.database_url.as_deref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_parses() {
        Cli::command_for_tests();
        let cli = Cli::try_parse_from([
            "roomcast",
            "serve",
            "--bind",
            "0.0.0.0:9000",
            "--allowed-origins",
            "http://a,http://b",
        ])
        .expect("parses");
        match cli.command {
            Command::Serve(args) => {
                assert_eq!(args.common.bind.port(), 9000);
                assert_eq!(args.allowed_origins, vec!["http://a", "http://b"]);
                assert_eq!(args.shutdown_mode, ShutdownModeArg::Frame);
                assert!(!args.redis_wait);
                assert_eq!(args.redis_prefix, "roomcast:");
            }
            other => panic!("expected serve, got {other:?}"),
        }
        let cli = Cli::try_parse_from([
            "roomcast",
            "serve",
            "--redis-url",
            "redis://127.0.0.1:6379",
            "--redis-wait",
        ])
        .expect("parses");
        match cli.command {
            Command::Serve(args) => {
                assert_eq!(args.redis_url.as_deref(), Some("redis://127.0.0.1:6379"));
                assert!(args.redis_wait);
            }
            other => panic!("expected serve, got {other:?}"),
        }
        let cli = Cli::try_parse_from(["roomcast", "fixture", "--rooms", "2", "--members", "3"])
            .expect("parses");
        assert!(matches!(
            cli.command,
            Command::Fixture(FixtureArgs {
                rooms: 2,
                members: 3,
                ..
            })
        ));
    }

    #[test]
    fn migrate_offers_only_the_flags_it_uses() {
        use clap::CommandFactory;
        let mut cli = Cli::command();
        let migrate = cli.find_subcommand_mut("migrate").expect("migrate exists");
        let flags: Vec<String> = migrate
            .get_arguments()
            .filter_map(|a| a.get_long().map(str::to_owned))
            .collect();
        for ignored in ["bind", "jwt-secret", "redis-url"] {
            assert!(
                !flags.iter().any(|f| f == ignored),
                "{ignored} in {flags:?}"
            );
        }
        assert!(flags.iter().any(|f| f == "database-url"), "{flags:?}");
        let cli = Cli::try_parse_from(["roomcast", "migrate", "--bind", "0.0.0.0:1"]);
        assert!(cli.is_err(), "migrate must refuse --bind");
        let cli =
            Cli::try_parse_from(["roomcast", "--log-format", "json", "migrate"]).expect("parses");
        assert_eq!(cli.log_format, LogFormat::Json);
    }

    #[test]
    fn keys_take_a_name_scopes_and_only_database_flags() {
        let cli = Cli::try_parse_from([
            "roomcast",
            "keys",
            "create",
            "deploy-bot",
            "--scope",
            "publish,read",
        ])
        .expect("parses");
        let Command::Keys(KeysArgs {
            command: KeysCommand::Create { name, scopes, .. },
        }) = cli.command
        else {
            panic!("expected keys create");
        };
        assert_eq!(name, "deploy-bot");
        assert_eq!(scopes, [Scope::Publish, Scope::Read]);
        for refused in [
            &["roomcast", "keys", "create", "bot"][..],
            &["roomcast", "keys", "create", "bot", "--scope", "admin"],
            &[
                "roomcast",
                "keys",
                "create",
                "bot",
                "--scope",
                "publish",
                "--bind",
                "0.0.0.0:1",
            ],
            &["roomcast", "keys", "list", "--jwt-secret", "x"],
            &["roomcast", "keys", "revoke"],
        ] {
            assert!(Cli::try_parse_from(refused).is_err(), "{refused:?}");
        }
        let cli = Cli::try_parse_from(["roomcast", "keys", "revoke", "bot", "--data-dir", "/d"])
            .expect("parses");
        assert!(matches!(
            cli.command,
            Command::Keys(KeysArgs {
                command: KeysCommand::Revoke { .. }
            })
        ));
    }

    impl Cli {
        fn command_for_tests() {
            use clap::CommandFactory;
            Cli::command().debug_assert();
        }
    }
}
