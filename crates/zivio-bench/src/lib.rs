//! Benchmarks of Zivio Webhooks (BENCHMARKS.md): the real service binary as a child process,
//! driven over loopback against a fast HTTPS receiver, next to the raw ceiling of the machine.
//! The certificate authority and the receiver come from `zivio-test-support`, shared with the
//! integration tests.

pub mod ceiling;
pub mod contracts;
pub mod report;
pub mod scenarios;
pub mod service;
