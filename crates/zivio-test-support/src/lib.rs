//! What the tests and the benchmark share, and nothing a user runs: a test certificate
//! authority that issues server and client certificates ([`pki`]), and the fastest HTTPS
//! receiver we can write on loopback ([`receiver`]).

pub mod pki;
pub mod receiver;
