/// Why a channel-layer call failed.
#[derive(Debug, thiserror::Error)]
pub enum BroadcastError {
    /// The layer's transport (Redis) is unreachable or failed.
    #[error("channel layer unavailable")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// Backfilling from storage failed.
    #[error("backfill failed")]
    Backfill(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The node is shutting down.
    #[error("channel layer closed")]
    Closed,
}
