//! Integration tests: the real binary, over real sockets, on SQLite and (when
//! `ZIVIO_TEST_DATABASE_URL` is set) PostgreSQL.

mod support;

mod abuse;
mod admin_forms;
mod admin_ui;
mod admit_only_us;
mod boundary;
mod cli;
mod crash;
mod deliveries;
mod delivery;
mod directory;
mod events;
mod health;
mod hostile;
mod hostile_load;
mod operations;
mod payload_contracts;
mod postgres;
mod rate_limits;
mod recoveries;
mod secrets_and_audit;
mod security;
mod startup;
mod webhooks;
