//! Test support: the real `zivio-webhooks` binary started as a child process on port 0, with its
//! output captured and its logs (JSON lines) parsed to learn the bound address.

pub mod api;
pub mod browser;
pub mod receiver;
pub mod sending;
pub mod service;
pub mod smtp;
