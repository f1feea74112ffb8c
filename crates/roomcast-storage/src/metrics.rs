//! What the writers record, through the `metrics` facade (a no-op until the
//! embedder installs a recorder; this crate never names an exporter).
//!
//! Only the names live here, next to the code that records them; their
//! help text, kinds and registration at zero are in the server's one
//! catalogue (`roomcast_transport::metrics::CATALOGUE`), which refers to
//! these constants so a name cannot drift.

use tokio::sync::mpsc;

/// Histogram: writes per committed batch (one transaction), both backends.
pub const BATCH_SIZE: &str = "roomcast_storage_batch_size";
/// Gauge: writes queued for a writer and not yet taken into a batch.
pub const QUEUED_WRITES: &str = "roomcast_storage_queued_writes";

/// Puts `job` on a writer's queue, counting it in [`QUEUED_WRITES`] until
/// the writer takes it ([`batch_taken`]). The slot is reserved first and
/// the gauge raised before the job is visible to the writer, so the gauge
/// never dips below zero; a caller cancelled while waiting for a slot
/// counted nothing.
pub(crate) async fn enqueue<T>(
    queue: &mpsc::Sender<T>,
    job: T,
) -> Result<(), mpsc::error::SendError<()>> {
    let slot = queue.reserve().await?;
    metrics::gauge!(QUEUED_WRITES).increment(1.0);
    slot.send(job);
    Ok(())
}

/// A writer took `writes` jobs off its queue as one batch.
pub(crate) fn batch_taken(writes: usize) {
    metrics::gauge!(QUEUED_WRITES).decrement(writes as f64);
    metrics::histogram!(BATCH_SIZE).record(writes as f64);
}
