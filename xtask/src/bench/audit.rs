//! The audit (issue 6): what each client saw against what storage holds.
//!
//! Storage's word comes from a `?since=0` replay of each room (ext: the
//! server stores events with `seq`); a server without it is audited against
//! what the senders sent. Every bench scenario runs it and must report zero
//! missing, duplicated and out-of-order deliveries.

use std::time::Duration;

use anyhow::Context;
use futures_util::StreamExt;
use serde::Serialize;
use tokio_tungstenite::tungstenite::Message;

use super::server::Fixture;
use super::ws::{self, Seen};

/// The audit's counts, summed over every member of every room.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct Audit {
    /// Where the truth came from: `storage` (replay) or `senders`.
    pub source: &'static str,
    /// Messages of the run that storage holds (or that were sent).
    pub stored: u64,
    /// Deliveries that should have happened: stored x members.
    pub expected: u64,
    /// Deliveries that happened (first copies only).
    pub delivered: u64,
    /// Stored messages a member never got.
    pub missing: u64,
    /// Second and later copies of a message to the same member.
    pub duplicated: u64,
    /// First copies that arrived after a message stored later.
    pub out_of_order: u64,
    /// Deliveries of messages storage does not hold.
    pub unexpected: u64,
    /// Messages sent without an error that storage does not hold.
    pub not_stored: u64,
    /// Seq gaps or repeats in the replayed log itself.
    pub storage_seq_faults: u64,
}

impl Audit {
    pub fn clean(&self) -> bool {
        self.missing == 0
            && self.duplicated == 0
            && self.out_of_order == 0
            && self.unexpected == 0
            && self.not_stored == 0
            && self.storage_seq_faults == 0
    }
}

/// What storage holds for one room: the run's message keys in seq order.
#[derive(Debug, Default, Clone)]
pub struct RoomTruth {
    pub keys: Vec<u64>,
    pub seq_faults: u64,
}

/// Compares deliveries with the truth. `truth[r]` lists room `r`'s keys in
/// storage order, `sent[r]` how many keys (0..sent) its sender sent, and
/// `received` each member's keys in arrival order.
pub fn audit<'a>(
    source: &'static str,
    truth: &[RoomTruth],
    sent: &[u64],
    received: impl IntoIterator<Item = (usize, &'a [u64])>,
) -> Audit {
    let mut out = Audit {
        source,
        ..Audit::default()
    };
    // Position of each key in its room's storage order.
    let positions: Vec<Vec<Option<usize>>> = truth
        .iter()
        .zip(sent)
        .map(|(t, &sent)| {
            let mut pos = vec![None; usize::try_from(sent).unwrap_or(0)];
            for (i, &k) in t.keys.iter().enumerate() {
                match pos.get_mut(usize::try_from(k).unwrap_or(usize::MAX)) {
                    Some(slot) if slot.is_none() => *slot = Some(i),
                    // Stored twice, or a key never sent: storage is wrong.
                    _ => out.storage_seq_faults += 1,
                }
            }
            out.not_stored += pos.iter().filter(|p| p.is_none()).count() as u64;
            pos
        })
        .collect();
    for t in truth {
        out.stored += t.keys.len() as u64;
        out.storage_seq_faults += t.seq_faults;
    }
    for (room, keys) in received {
        let (Some(pos), Some(t)) = (positions.get(room), truth.get(room)) else {
            out.unexpected += keys.len() as u64;
            continue;
        };
        out.expected += t.keys.len() as u64;
        let mut seen = vec![false; t.keys.len()];
        let mut furthest: Option<usize> = None;
        for &k in keys {
            let Some(Some(i)) = pos.get(usize::try_from(k).unwrap_or(usize::MAX)).copied() else {
                out.unexpected += 1;
                continue;
            };
            if seen[i] {
                out.duplicated += 1;
                continue;
            }
            seen[i] = true;
            out.delivered += 1;
            if furthest.is_some_and(|f| i < f) {
                out.out_of_order += 1;
            }
            furthest = Some(furthest.map_or(i, |f| f.max(i)));
        }
        out.missing += seen.iter().filter(|s| !**s).count() as u64;
    }
    out
}

/// The truth when the server has no replay: everything sent, in order.
pub fn truth_from_senders(sent: &[u64]) -> Vec<RoomTruth> {
    sent.iter()
        .map(|&n| RoomTruth {
            keys: (0..n).collect(),
            seq_faults: 0,
        })
        .collect()
}

/// Replays every room from `seq` 0 (as its first member) and keeps the
/// keys of run `tag` (all events' seqs are checked for gaps and repeats).
pub async fn truth_from_storage(fixture: &Fixture, tag: &str) -> anyhow::Result<Vec<RoomTruth>> {
    let nodes = fixture.nodes()?;
    let node = &nodes[0];
    let replays = futures_util::stream::iter(fixture.rooms.iter().enumerate())
        .map(|(r, room)| async move {
            let member = room.members.first().context("a room without members")?;
            let mut socket = ws::connect(fixture, node, room, member, Some(0), r as u32).await?;
            let mut truth = RoomTruth::default();
            let mut last = 0u64;
            let replay = async {
                while let Some(message) = socket.next().await {
                    let Message::Text(text) = message? else {
                        continue;
                    };
                    let Some(seen) = Seen::parse(text.as_str()) else {
                        continue;
                    };
                    if seen.is_synced() {
                        return Ok::<_, anyhow::Error>(());
                    }
                    if let Some(seq) = seen.seq.filter(|_| seen.action.is_some()) {
                        if seq != last + 1 {
                            truth.seq_faults += 1;
                        }
                        last = seq;
                    }
                    if seen.is_new()
                        && let Some((room, key, _)) = seen.bench_body(tag)
                        && room == r
                    {
                        truth.keys.push(key);
                    }
                }
                anyhow::bail!("the replay ended before `synced`")
            };
            tokio::time::timeout(Duration::from_secs(120), replay)
                .await
                .context("the replay took over 120 s")??;
            Ok::<_, anyhow::Error>((r, truth))
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
    let mut truth = vec![RoomTruth::default(); fixture.rooms.len()];
    for replay in replays {
        let (r, t) = replay?;
        truth[r] = t;
    }
    Ok(truth)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn truth(keys: &[u64]) -> RoomTruth {
        RoomTruth {
            keys: keys.to_vec(),
            seq_faults: 0,
        }
    }

    #[test]
    fn a_perfect_run_audits_clean() {
        let t = [truth(&[0, 1, 2]), truth(&[0, 1])];
        let got = audit(
            "storage",
            &t,
            &[3, 2],
            [(0, &[0, 1, 2][..]), (0, &[0, 1, 2][..]), (1, &[0, 1][..])],
        );
        assert!(got.clean(), "{got:?}");
        assert_eq!((got.stored, got.expected, got.delivered), (5, 8, 8));
    }

    #[test]
    fn missing_duplicated_out_of_order_and_unknown_deliveries_are_counted() {
        // Storage order 0, 2, 1 (two senders raced); 3 was sent, not stored.
        let t = [truth(&[0, 2, 1])];
        let got = audit(
            "storage",
            &t,
            &[4],
            [(0, &[0, 1, 2, 2, 9][..]), (0, &[2][..])],
        );
        assert_eq!(got.not_stored, 1);
        assert_eq!(got.duplicated, 1);
        assert_eq!(got.out_of_order, 1, "1 came before 2, stored after it");
        assert_eq!(got.unexpected, 1);
        assert_eq!(got.missing, 2, "the second member missed 0 and 1");
        assert!(!got.clean());
    }

    #[test]
    fn storage_faults_count_against_the_run() {
        let mut t = truth(&[0, 0, 1]);
        t.seq_faults = 2;
        let got = audit("storage", &[t], &[2], [(0, &[0, 1][..])]);
        assert_eq!(got.storage_seq_faults, 3);
        assert!(!got.clean());
        let senders = truth_from_senders(&[2]);
        assert_eq!(senders[0].keys, [0, 1]);
    }
}
