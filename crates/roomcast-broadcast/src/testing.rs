//! Test support (feature `test-support`): a `redis-server` (or a Redis
//! Cluster) of a test's own, for tests that kill or pause Redis without
//! touching the machine's shared one. Not in production builds.

use std::time::Duration;

mod cluster;
pub use cluster::{Primary, PrivateCluster, cli as redis_cli, until};

/// A `redis-server` on a port of its own, killed when dropped.
#[derive(Debug)]
pub struct PrivateRedis {
    port: u16,
    child: Option<tokio::process::Child>,
}

impl PrivateRedis {
    /// A port nothing listens on now (the OS's pick).
    pub fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port()
    }

    /// Starts one on a free port and waits until it answers.
    pub async fn start() -> Self {
        Self::start_on(Self::free_port()).await
    }

    /// Starts one on `port` and waits until it answers.
    pub async fn start_on(port: u16) -> Self {
        let mut redis = PrivateRedis { port, child: None };
        redis.restart().await;
        redis
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts it (again) on the same port, and waits until it answers.
    pub async fn restart(&mut self) {
        let child = tokio::process::Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-server is installed");
        self.child = Some(child);
        for _ in 0..200 {
            if ping(self.port).await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("private redis-server did not start on {}", self.port);
    }

    /// Freezes it with SIGSTOP: connections stay open and nothing answers,
    /// as on a stalled host or a network that drops everything.
    pub async fn pause(&self) {
        self.signal("-STOP").await;
    }

    /// Thaws it with SIGCONT after [`PrivateRedis::pause`].
    pub async fn resume(&self) {
        self.signal("-CONT").await;
    }

    async fn signal(&self, signal: &str) {
        let pid = self
            .child
            .as_ref()
            .and_then(tokio::process::Child::id)
            .expect("redis-server running");
        let status = tokio::process::Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .await
            .expect("kill runs");
        assert!(status.success(), "kill {signal} {pid}: {status}");
    }

    /// Kills it (a crash, not a shutdown).
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().await.expect("kill redis-server");
        }
    }
}

async fn ping(port: u16) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut tcp) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
        return false;
    };
    let mut buf = [0u8; 7];
    tcp.write_all(b"PING\r\n").await.is_ok()
        && tcp.read_exact(&mut buf).await.is_ok()
        && &buf == b"+PONG\r\n"
}
