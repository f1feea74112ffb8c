//! A Roomcast chat client for Rust services: the seed's `useWebSocket()`
//! composable, plus what the seed lacks.
//!
//! A [`Client`] connects to one room with a token (cookie or bearer),
//! posts with [`send`](Client::send) (each with an automatic `clientId`),
//! edits with [`update`](Client::update) and [`delete`](Client::delete),
//! and keeps the room's [`messages`](Client::messages) up to date as
//! `new`/`update`/`delete` events arrive. Subscribers get typed events
//! ([`ClientEvent`]: the domain crate's wire frames, never raw JSON:
//! `ChatEvent::Presence`, `Join`, `Leave`, `Typing`, `Read` receipts, and
//! on a user socket `Activity`, `Added`, `Removed`) and the connection
//! [`Status`]. [`read`](Client::read) marks the room read up to a seq;
//! [`presence`](Client::presence) is who is in the room right now.
//!
//! When the socket drops, the client reconnects by itself with exponential
//! backoff and jitter ([`Backoff`]) and resumes with `?since=<last seq
//! applied>`: the server replays what was missed, and anything at or below
//! that seq is dropped, so no event is lost or seen twice ([`MessageList`]).
//! On `reset` the list is emptied. Sends not yet confirmed are sent again
//! with the same `clientId` after each reconnect; the server stores each
//! once. 401/403/404 refusals and a 1008 close stop it for good
//! ([`Status::Failed`]), except a 1008 "Token expired." when a
//! [`TokenProvider`] can renew the token: the client asks it for a new one
//! before expiry, or after that close, and reconnects with it at once.
//!
//! `wss://` uses rustls with the public roots compiled in
//! ([`ClientConfig::with_root_certificates`] adds others); [`login`] and
//! [`Api`] make the HTTP calls a service needs to log in and renew. Every
//! [`ClientError`] message carries its causes. See the crate's README.
//!
//! ```no_run
//! use roomcast_client::{Auth, Client, ClientConfig, ClientEvent};
//! use roomcast_domain::wire::{ChatMessage, ServerFrame};
//!
//! # async fn demo(token: String) -> Result<(), roomcast_client::ClientError> {
//! let config = ClientConfig::new(
//!     "ws://127.0.0.1:8080/ws/chat",
//!     "user-0",
//!     "room-0",
//!     Auth::Bearer(token),
//! )?;
//! let (client, mut events) = Client::connect(config);
//! client.send("hello").await?;
//! while let Some(event) = events.next().await {
//!     if let ClientEvent::Frame(ServerFrame::Message(ChatMessage::New(new))) = event {
//!         println!("{}: {} (seq {})", new.user, new.body, new.seq);
//!         break;
//!     }
//! }
//! println!("{} messages in the room", client.messages().len());
//! client.close().await;
//! # Ok(())
//! # }
//! ```
//!
//! `examples/chat.rs` is a runnable version against `roomcast fixture`.
//!
//! Invariant: this crate knows the wire protocol only through
//! `roomcast-domain`; it never depends on the server's crates.

mod api;
mod backoff;
mod client;
mod config;
mod error;
mod messages;
mod tls;
mod token;

pub use api::{Api, Tokens, login};
pub use backoff::Backoff;
pub use client::{Client, ClientEvent, Events, PendingSend, Status};
pub use config::{Auth, ClientConfig};
pub use error::{BoxError, ClientError};
pub use messages::{Applied, MessageList};
pub use rustls::pki_types::CertificateDer;
pub use tls::certificates_from_pem;
pub use token::TokenProvider;
