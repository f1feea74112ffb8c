//! The JSON frames of `PROTOCOL.md`, in one place.
//!
//! Seed fields keep the seed's exact names and casing (`userAvatar`,
//! `user_id`, `messageId`); extension fields (`seq`, `clientId`, `code`) are
//! ones a seed client ignores. Entities are converted to these shapes here,
//! never serialized directly.

mod client;
mod server;

pub use client::{ClientFrame, FrameError};
pub use server::{
    ChatEvent, ChatMessage, DeleteFrame, ErrorCode, ErrorFrame, FrameIds, Incoming, NewFrame,
    ServerFrame, UpdateFrame,
};
