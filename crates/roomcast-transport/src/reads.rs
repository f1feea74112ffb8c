//! Read positions, for both doors (the `read` frame, `PUT .../read`): store
//! the position, then tell whoever should know. One code path, so a read
//! over HTTP is seen exactly like one over a socket.

use roomcast_domain::{Room, Seq, User};
use roomcast_storage::{ReadMark, StorageError};

use crate::AppState;

/// Moves `user`'s read position in `room` forward to `seq` (clamped to
/// the room's last seq). `NotFound` when the user is not a participant.
pub(crate) async fn mark_read(
    app: &AppState,
    room: &Room,
    user: &User,
    seq: Seq,
) -> Result<ReadMark, StorageError> {
    app.storage().mark_read(room.id, user.id, seq).await
}
