//! A private Redis Cluster on loopback for one test: three primaries and
//! three replicas on free ports, in a temporary directory, killed when
//! dropped. Never the machine's shared Redis.

use std::time::Duration;

use tokio::process::{Child, Command};

#[derive(Debug)]
pub struct PrivateCluster {
    _dir: tempfile::TempDir,
    ports: Vec<u16>,
    children: Vec<Option<Child>>,
}

/// A free port whose cluster bus port (port + 10000) is free too.
fn free_port(taken: &[u16]) -> u16 {
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        if port < 55_000
            && !taken.contains(&port)
            && std::net::TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok()
        {
            return port;
        }
    }
}

/// `redis-cli -p port args...`, its output (empty if it failed).
pub async fn cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .output()
        .await
        .expect("redis-cli is installed");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Polls `check` every 50 ms for up to 20 s.
pub async fn until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..400 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

/// One primary of `CLUSTER NODES`: its id, port and slot ranges.
#[derive(Debug, Clone)]
pub struct Primary {
    pub id: String,
    pub port: u16,
    pub slots: Vec<(u16, u16)>,
}

impl Primary {
    pub fn owns(&self, slot: u16) -> bool {
        self.slots.iter().any(|(a, b)| (*a..=*b).contains(&slot))
    }
}

impl PrivateCluster {
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut ports = Vec::new();
        for _ in 0..6 {
            let port = free_port(&ports);
            ports.push(port);
        }
        let mut children = Vec::new();
        for port in &ports {
            let child = Command::new("redis-server")
                .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
                .args(["--cluster-enabled", "yes"])
                .args(["--cluster-config-file", &format!("nodes-{port}.conf")])
                // Fast failure detection, so a failover takes about a second.
                .args(["--cluster-node-timeout", "500"])
                // A replica takes over however long ago it heard its
                // primary (the machine is shared and may be slow).
                .args(["--cluster-replica-validity-factor", "0"])
                .args(["--save", "", "--appendonly", "no"])
                .arg("--dir")
                .arg(dir.path())
                .stdout(std::process::Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .expect("redis-server is installed");
            children.push(Some(child));
        }
        let cluster = PrivateCluster {
            _dir: dir,
            ports,
            children,
        };
        for &port in &cluster.ports {
            until("redis-server to start", || async move {
                cli(port, &["PING"]).await.trim() == "PONG"
            })
            .await;
        }
        let nodes: Vec<String> = cluster
            .ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        let mut create = vec!["--cluster", "create"];
        create.extend(nodes.iter().map(String::as_str));
        create.extend(["--cluster-replicas", "1", "--cluster-yes"]);
        let port = cluster.ports[0];
        cli(port, &create).await;
        cluster.wait_ok().await;
        cluster
    }

    /// Waits until every live node says the cluster is ok, with three
    /// primaries each covering slots and each with a replica.
    pub async fn wait_ok(&self) {
        let live: Vec<u16> = self
            .ports
            .iter()
            .zip(&self.children)
            .filter(|(_, c)| c.is_some())
            .map(|(p, _)| *p)
            .collect();
        until("the cluster to be ok on every node", || {
            let live = live.clone();
            async move {
                for port in live {
                    let info = cli(port, &["CLUSTER", "INFO"]).await;
                    if !info.contains("cluster_state:ok")
                        || !info.contains("cluster_slots_ok:16384")
                    {
                        return false;
                    }
                }
                true
            }
        })
        .await;
    }

    /// `redis-cluster://` URL naming every primary seed.
    pub fn url(&self) -> String {
        let nodes: Vec<String> = self
            .ports
            .iter()
            .take(3)
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        format!("redis-cluster://{}", nodes.join(","))
    }

    /// A port of a node that is still running.
    pub fn live_port(&self) -> u16 {
        self.ports
            .iter()
            .zip(&self.children)
            .find(|(_, c)| c.is_some())
            .map(|(p, _)| *p)
            .expect("a live node")
    }

    /// The primaries, as the live node `via` sees them.
    pub async fn primaries(&self) -> Vec<Primary> {
        let nodes = cli(self.live_port(), &["CLUSTER", "NODES"]).await;
        nodes
            .lines()
            .filter(|l| l.contains("master") && !l.contains("fail"))
            .filter_map(|line| {
                let fields: Vec<&str> = line.split(' ').collect();
                let port = fields.get(1)?.split(['@', ':']).nth(1)?.parse().ok()?;
                let slots = fields
                    .iter()
                    .skip(8)
                    .filter(|f| !f.starts_with('['))
                    .filter_map(|range| match range.split_once('-') {
                        Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
                        None => range.parse().ok().map(|s| (s, s)),
                    })
                    .collect::<Vec<_>>();
                (!slots.is_empty()).then(|| Primary {
                    id: fields[0].to_owned(),
                    port,
                    slots,
                })
            })
            .collect()
    }

    /// Kills the node on `port` (SIGKILL: no goodbye to the cluster).
    pub async fn kill(&mut self, port: u16) {
        let at = self.ports.iter().position(|p| *p == port).expect("a node");
        if let Some(mut child) = self.children[at].take() {
            child.kill().await.expect("kill redis-server");
        }
    }

    /// Moves `slot` (with any keys in it) from one primary to another, the
    /// way `redis-cli --cluster reshard` does.
    pub async fn move_slot(&self, slot: u16, from: &Primary, to: &Primary) {
        let s = slot.to_string();
        cli(to.port, &["CLUSTER", "SETSLOT", &s, "IMPORTING", &from.id]).await;
        cli(from.port, &["CLUSTER", "SETSLOT", &s, "MIGRATING", &to.id]).await;
        loop {
            let keys = cli(from.port, &["CLUSTER", "GETKEYSINSLOT", &s, "100"]).await;
            let keys: Vec<&str> = keys.lines().filter(|k| !k.is_empty()).collect();
            if keys.is_empty() {
                break;
            }
            let port = to.port.to_string();
            let mut args = vec!["MIGRATE", "127.0.0.1", &port, "", "0", "5000", "KEYS"];
            args.extend(keys);
            cli(from.port, &args).await;
        }
        for port in [to.port, from.port] {
            cli(port, &["CLUSTER", "SETSLOT", &s, "NODE", &to.id]).await;
        }
        until("every node to see the slot moved", || async {
            self.primaries()
                .await
                .iter()
                .any(|p| p.id == to.id && p.owns(slot))
        })
        .await;
        self.wait_ok().await;
    }
}
