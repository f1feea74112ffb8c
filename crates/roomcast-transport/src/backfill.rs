//! Stored events as broadcast envelopes: what the hub fetches to fill gaps
//! and what sockets replay on resume.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use roomcast_broadcast::{Backfill, BroadcastError, Envelope, Hub, HubConfig};
use roomcast_domain::wire::ServerFrame;
use roomcast_domain::{Event, RoomId, Seq};
use roomcast_storage::Storage;

/// Serializes a stored event once, for every socket that will send it.
pub fn encode_event(event: &Event) -> Envelope {
    Envelope::Event {
        seq: event.seq,
        frame: Bytes::from(ServerFrame::from_event(event).to_json()),
    }
}

/// A hub builder whose gaps are filled from `storage`.
pub fn hub_builder(storage: &Storage, config: HubConfig) -> roomcast_broadcast::HubBuilder {
    Hub::builder(config, Arc::new(StorageBackfill(storage.clone())))
}

struct StorageBackfill(Storage);

#[async_trait]
impl Backfill for StorageBackfill {
    async fn last_seq(&self, room: RoomId) -> Result<Seq, BroadcastError> {
        match self.0.last_seq(room).await {
            Ok(seq) => Ok(seq),
            // A user's own channel (`user_feed::user_channel`) is no room
            // and has no event log: it starts, and stays, at 0.
            Err(roomcast_storage::StorageError::NotFound) => Ok(Seq::ZERO),
            Err(e) => Err(BroadcastError::Backfill(Box::new(e))),
        }
    }

    async fn events_after(
        &self,
        room: RoomId,
        after: Seq,
        limit: u32,
    ) -> Result<Vec<Envelope>, BroadcastError> {
        let events = self
            .0
            .events_since(room, after, limit)
            .await
            .map_err(|e| BroadcastError::Backfill(Box::new(e)))?;
        Ok(events.iter().map(encode_event).collect())
    }
}
