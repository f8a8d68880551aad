//! Pure domain logic of Zivio Webhooks (see `docs/product.md`).
//!
//! Nothing here performs I/O, reads a clock or draws randomness: those come in as arguments,
//! so every rule is a plain function with fast, deterministic tests.

pub mod access;
pub mod audit;
pub mod catalog;
pub mod contract;
pub mod custom_header;
pub mod delivery;
pub mod directory;
pub mod duration;
pub mod error_kind;
pub mod event;
pub mod ids;
pub mod keys;
pub mod notice;
pub mod password;
pub mod permission;
pub mod rate_limit;
pub mod recovery;
pub mod retry;
pub mod secret;
pub mod shaping;
pub mod signing;
pub mod subscription;
pub mod url_policy;
pub mod webhook;
