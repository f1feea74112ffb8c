//! The vocabulary of Roomcast: who (users), where (rooms), what (messages and
//! the per-room event log) and how it travels (the wire frames of
//! `PROTOCOL.md`).
//!
//! Invariant: this crate does no IO and knows no async runtime, database or
//! web framework. Every other crate depends on it; it depends on none of them.
//! Values are parsed once at the edge into newtypes with private fields
//! ([`Username`], [`RoomSlug`], [`MessageBody`], ...), so code downstream never
//! re-validates and never holds an unchecked string.

mod body;
mod entities;
mod event;
mod ids;
mod names;
mod scope;
mod timestamp;
mod visibility;
pub mod wire;

pub use body::{
    BodyError, ClientId, ClientIdError, MAX_BODY_CHARS, MAX_CLIENT_ID_CHARS, MessageBody,
};
pub use entities::{Message, Room, User};
pub use event::{Event, EventKind, NegativeSeq, Seq};
pub use ids::{IdError, MessageId, RefreshFamily, RoomId, ServiceKeyId, UserId};
pub use names::{MAX_NAME_CHARS, NameError, RoomSlug, Username};
pub use scope::{Scope, ScopeError, Scopes};
pub use timestamp::Timestamp;
pub use visibility::{Visibility, VisibilityError};
