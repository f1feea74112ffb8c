//! Roomcast end to end: real servers on real sockets, driven the way the
//! seed's client and Roomcast's own clients drive them. One test binary;
//! each module is one area of the contract (`docs/protocol.md`).

mod harness;

mod chat;
mod client;
mod closing;
mod cluster;
mod embedding;
mod handshake;
mod hardening;
mod http_api;
mod lifecycle;
mod multinode;
mod observability;
mod outage;
mod presence;
mod resume;
mod rooms;
mod service_keys;
mod web;
