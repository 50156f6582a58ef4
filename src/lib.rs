//! wscluster: a clustered WebSocket publish/subscribe server.
//!
//! The crate serves the sgc protocol (sub-protocol `esegece.com`) and the
//! presence protocol (`presence.esegece.com`) over RFC 6455 WebSocket, and
//! can be embedded as a library or run as the `wscluster` binary. See
//! `ARCHITECTURE.md` for the map of modules.

pub mod cli;
pub mod cluster;
pub mod config;
pub mod hub;
pub mod presence;
pub mod server;
pub mod sgc;
pub mod sync;
