//! Private PostgreSQL servers, for tests that stop a server or need a
//! streaming replica: never the machine's shared one. Each lives in a temp
//! dir (data, socket, log) on a free port; dropping it stops the server.
//! Test support: failures to set one up panic with what went wrong.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Output};

/// One private PostgreSQL server: a primary, or a streaming replica of one
/// ([`PrivatePostgres::replica`]).
#[derive(Debug)]
pub struct PrivatePostgres {
    temp: tempfile::TempDir,
    port: u16,
    /// initdb and postgres refuse to run as root: then they run as the
    /// `postgres` user, which owns the temp dir.
    as_postgres: bool,
}

impl PrivatePostgres {
    /// Creates and starts a primary; `None` when initdb is not installed.
    pub fn start_new() -> Option<Self> {
        if Command::new("initdb").arg("--version").output().is_err() {
            return None;
        }
        let pg = Self::empty();
        let data = pg.data().display().to_string();
        pg.run_pg(
            "initdb",
            &[
                "-D", &data, "-U", "postgres", "-A", "trust", "-E", "UTF8", "-N",
            ],
        );
        pg.start();
        Some(pg)
    }

    /// Creates and starts a hot-standby replica of this server, streaming
    /// its WAL (`pg_basebackup -R`): read-only, and as far behind as
    /// replay is, which [`pause_replay`](Self::pause_replay) makes
    /// arbitrary.
    pub fn replica(&self) -> Self {
        let replica = Self::empty();
        let data = replica.data().display().to_string();
        let port = self.port.to_string();
        replica.run_pg(
            "pg_basebackup",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-U",
                "postgres",
                "-D",
                &data,
                "-R",
                "-X",
                "stream",
                "--no-sync",
            ],
        );
        replica.start();
        replica
    }

    /// A temp dir and a free port, no server yet.
    fn empty() -> Self {
        let temp = tempfile::tempdir().expect("temp dir");
        let as_postgres = run(Command::new("id").arg("-u")).stdout.trim_ascii() == b"0";
        if as_postgres {
            run(Command::new("chown").arg("postgres:").arg(temp.path()));
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        Self {
            temp,
            port,
            as_postgres,
        }
    }

    fn data(&self) -> PathBuf {
        self.temp.path().join("data")
    }

    /// The server's `postgres` database.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Starts the server (again); waits until it takes connections.
    pub fn start(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1",
            self.port,
            self.temp.path().display()
        );
        let log = self.temp.path().join("log").display().to_string();
        let data = self.data().display().to_string();
        self.run_pg(
            "pg_ctl",
            &[
                "-D", &data, "-l", &log, "-o", &options, "-w", "-t", "60", "start",
            ],
        );
    }

    /// Stops it the way an operator (`fast`) or a crash (`immediate`)
    /// does: sessions are terminated, open transactions rolled back.
    pub fn stop(&self, mode: &str) -> Output {
        let data = self.data().display().to_string();
        self.command("pg_ctl")
            .args(["-D", &data, "-m", mode, "-w", "-t", "60", "stop"])
            .output()
            .expect("pg_ctl runs")
    }

    /// On a replica: stops applying the WAL it receives, so it lags the
    /// primary by every commit from now until [`resume_replay`](Self::resume_replay).
    pub fn pause_replay(&self) {
        self.psql("SELECT pg_wal_replay_pause()");
    }

    /// On a replica: applies the WAL again, catching up.
    pub fn resume_replay(&self) {
        self.psql("SELECT pg_wal_replay_resume()");
    }

    /// On a replica: waits (up to a minute) until it has replayed
    /// everything `primary` had committed when this was called.
    pub async fn caught_up_with(&self, primary: &Self) {
        use sqlx::Connection;

        let mut on_primary = sqlx::PgConnection::connect(&primary.url())
            .await
            .expect("connect to the primary");
        let target: String = sqlx::query_scalar("SELECT pg_current_wal_lsn()::text")
            .fetch_one(&mut on_primary)
            .await
            .expect("the primary's WAL position");
        let mut on_replica = sqlx::PgConnection::connect(&self.url())
            .await
            .expect("connect to the replica");
        let replayed = async {
            loop {
                let done: bool =
                    sqlx::query_scalar("SELECT pg_last_wal_replay_lsn() >= $1::text::pg_lsn")
                        .bind(&target)
                        .fetch_one(&mut on_replica)
                        .await
                        .expect("the replica's replay position");
                if done {
                    return;
                }
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        };
        tokio::time::timeout(std::time::Duration::from_secs(60), replayed)
            .await
            .expect("the replica catches up");
    }

    /// `url` (of a database on `self`) on the server `other` instead.
    pub fn url_on(&self, url: &str, other: &Self) -> String {
        url.replacen(&format!(":{}/", self.port), &format!(":{}/", other.port), 1)
    }

    fn psql(&self, sql: &str) {
        self.run_pg("psql", &["-X", "-q", "-d", &self.url(), "-c", sql]);
    }

    fn command(&self, program: &str) -> Command {
        let mut c = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--", program]);
            c
        } else {
            Command::new(program)
        };
        c.current_dir(self.temp.path());
        c
    }

    fn run_pg(&self, program: &str, args: &[&str]) {
        run(self.command(program).args(args));
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        // Already stopped is fine; a server left running is not.
        let _ = self.stop("immediate");
    }
}

fn run(command: &mut Command) -> Output {
    let out = command.output().expect("command runs");
    assert!(
        out.status.success(),
        "{command:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}
