//! Logged-out sessions: their access tokens stop working on every node, and
//! their open sockets close (1008).
//!
//! An access token names its login session (`sid`). Logout records the
//! session in the database's revocation list; each node keeps the list in
//! memory, so checking a token costs a map lookup, not a query, and polls
//! the database every [`POLL_EVERY`] for other nodes' logouts. So a token
//! is refused at once on the node that logged it out and within about a
//! second everywhere else. Entries live until the tokens they name would
//! have expired anyway.

use std::time::Duration;

use dashmap::DashMap;
use roomcast_domain::{RefreshFamily, Timestamp};
use tokio_util::sync::CancellationToken;

use crate::AppState;

/// How often a node reads other nodes' logouts.
const POLL_EVERY: Duration = Duration::from_secs(1);
/// Each poll reads this far back too: revocation times come from several
/// nodes' clocks.
const POLL_OVERLAP: Duration = Duration::from_secs(30);
/// Polls between two prunes of expired revocations from the database.
const PRUNE_EVERY: u32 = 600;

/// The node's revocation list and its open sessions' sockets.
#[derive(Debug, Default)]
pub(crate) struct Sessions {
    /// Revoked sessions and when their tokens expire (Unix µs).
    revoked: DashMap<RefreshFamily, i64>,
    /// Sessions with open sockets here: cancelled when revoked.
    live: DashMap<RefreshFamily, (CancellationToken, usize)>,
}

impl Sessions {
    pub(crate) fn is_revoked(&self, session: RefreshFamily) -> bool {
        self.revoked.contains_key(&session)
    }

    /// Marks a session revoked here and closes its sockets here.
    pub(crate) fn revoke(&self, session: RefreshFamily, expires: Timestamp) {
        self.revoked.insert(session, expires.unix_micros());
        if let Some(live) = self.live.get(&session) {
            live.0.cancel();
        }
    }

    /// A token cancelled when `session` is revoked, for one socket; the
    /// socket holds the guard while it is open.
    pub(crate) fn watch(&self, session: RefreshFamily) -> SessionWatch<'_> {
        let mut entry = self
            .live
            .entry(session)
            .or_insert_with(|| (CancellationToken::new(), 0));
        entry.1 += 1;
        let token = entry.0.clone();
        drop(entry);
        if self.is_revoked(session) {
            token.cancel();
        }
        SessionWatch {
            sessions: self,
            session,
            token,
        }
    }

    fn forget_expired(&self, now: Timestamp) {
        let now = now.unix_micros();
        self.revoked.retain(|_, expires| *expires > now);
    }
}

/// One socket's watch on its session.
#[derive(Debug)]
pub(crate) struct SessionWatch<'a> {
    sessions: &'a Sessions,
    session: RefreshFamily,
    token: CancellationToken,
}

impl SessionWatch<'_> {
    /// Resolves when the session is revoked.
    pub(crate) async fn ended(&self) {
        self.token.cancelled().await
    }
}

impl Drop for SessionWatch<'_> {
    fn drop(&mut self) {
        self.sessions
            .live
            .remove_if_mut(&self.session, |_, (_, sockets)| {
                *sockets = sockets.saturating_sub(1);
                *sockets == 0
            });
    }
}

/// Loads every live revocation (before the server answers anything), then
/// follows other nodes' logouts until shutdown.
pub(crate) async fn load(app: &AppState) -> Timestamp {
    let since = Timestamp::from_unix_micros(0).unwrap_or_else(Timestamp::now);
    poll_once(app, since).await.unwrap_or(since)
}

pub(crate) async fn follow(app: AppState, mut since: Timestamp) {
    let shutdown = app.shutdown_token().clone();
    let mut every = tokio::time::interval(POLL_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut polls = 0u32;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = every.tick() => {}
        }
        if let Some(next) = poll_once(&app, since).await {
            since = next;
        }
        polls = polls.wrapping_add(1);
        if polls.is_multiple_of(PRUNE_EVERY) {
            let now = Timestamp::now();
            app.sessions().forget_expired(now);
            if let Err(e) = app.storage().prune_revoked_sessions(now).await {
                tracing::debug!(error = %e, "pruning revoked sessions failed; will retry");
            }
        }
    }
}

/// Reads revocations since `since`; returns where the next poll starts.
async fn poll_once(app: &AppState, since: Timestamp) -> Option<Timestamp> {
    let started = Timestamp::now();
    match app.storage().revoked_sessions_since(since).await {
        Ok(revoked) => {
            // Kept here for a token lifetime from now: no token of the
            // session can outlive that.
            let until = access_token_end(app, started).unwrap_or(started);
            for (session, _) in revoked {
                app.sessions()
                    .revoke(RefreshFamily::from_uuid(session), until);
            }
            let overlap = i64::try_from(POLL_OVERLAP.as_micros()).unwrap_or(0);
            Timestamp::from_unix_micros(started.unix_micros().saturating_sub(overlap))
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot read revoked sessions; will retry");
            None
        }
    }
}

/// When a token issued now would expire: a revocation seen now can be
/// forgotten then.
pub(crate) fn access_token_end(app: &AppState, from: Timestamp) -> Option<Timestamp> {
    let ttl = i64::try_from(app.config().access_token_ttl.as_micros()).ok()?;
    Timestamp::from_unix_micros(from.unix_micros().saturating_add(ttl))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn revoking_a_session_ends_its_sockets_and_only_those() {
        let sessions = Sessions::default();
        let (mine, other) = (RefreshFamily::new(), RefreshFamily::new());
        let first = sessions.watch(mine);
        let second = sessions.watch(mine);
        let theirs = sessions.watch(other);
        let later = Timestamp::from_unix_micros(Timestamp::now().unix_micros() + 60_000_000)
            .expect("in range");
        sessions.revoke(mine, later);
        first.ended().await;
        second.ended().await;
        assert!(sessions.is_revoked(mine));
        assert!(!theirs.token.is_cancelled());
        // A socket opening on a revoked session ends at once.
        sessions.watch(mine).ended().await;
        drop((first, second, theirs));
        assert!(
            sessions.live.is_empty(),
            "closed sockets leave nothing behind"
        );
        sessions.forget_expired(later);
        assert!(!sessions.is_revoked(mine));
    }
}
