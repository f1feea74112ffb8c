//! The one error type storage returns.

/// Why a storage call failed, in terms a caller can act on.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The thing addressed does not exist (or not in that room).
    #[error("not found")]
    NotFound,
    /// The caller may not change it (not the message's author).
    #[error("not the author")]
    Forbidden,
    /// A uniqueness rule was violated; names which one.
    #[error("already exists: {0}")]
    Conflict(&'static str),
    /// The database could not be reached or failed: nothing was stored.
    #[error("storage unavailable")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A row could not be turned back into domain values.
    #[error("stored data is invalid: {0}")]
    Corrupt(String),
    /// The configuration asks for something this build cannot do.
    #[error("{0}")]
    Unsupported(String),
}

impl StorageError {
    pub(crate) fn unavailable(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        StorageError::Unavailable(Box::new(e))
    }
}
