//! What the channel layer records, through the `metrics` facade (a no-op
//! until the embedder installs a recorder; this crate never names an
//! exporter).
//!
//! Only the names live here, next to the code that records them; their
//! help text, kinds and registration at zero are in the server's one
//! catalogue (`roomcast_transport::metrics::CATALOGUE`), which refers to
//! these constants so a name cannot drift.

use std::collections::HashSet;

use fred::types::config::Server;

/// Counter: connections to Redis made again after being lost, by
/// `connection` (`publisher`, `subscriber`). On Redis Cluster each
/// primary's connection counts.
pub const RECONNECTS: &str = "roomcast_channel_reconnects_total";

/// The label values of [`RECONNECTS`].
pub const CONNECTIONS: &[&str] = &["publisher", "subscriber"];

/// Tells one client's first connection to each server from its
/// reconnections: fred reports both on the same channel.
#[derive(Debug)]
pub(crate) struct Connections {
    connection: &'static str,
    seen: HashSet<(String, u16)>,
}

impl Connections {
    /// For the client named `connection` (one of [`CONNECTIONS`]).
    pub(crate) fn new(connection: &'static str) -> Self {
        Self {
            connection,
            seen: HashSet::new(),
        }
    }

    /// The client (re)connected to `server`; counts it if it had been
    /// connected to that server before. Returns whether it had.
    pub(crate) fn connected(&mut self, server: &Server) -> bool {
        let again = !self.seen.insert((server.host.to_string(), server.port));
        if again {
            metrics::counter!(RECONNECTS, "connection" => self.connection).increment(1);
        }
        again
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_second_connection_to_the_same_server_is_a_reconnect() {
        let mut connections = Connections::new("subscriber");
        let a = Server::new("10.0.0.1", 6379);
        let b = Server::new("10.0.0.2", 6379);
        assert!(!connections.connected(&a), "first connection");
        assert!(!connections.connected(&b), "another cluster primary");
        assert!(connections.connected(&a), "a again");
        assert!(connections.connected(&b), "b again");
    }
}
