//! Fresh, isolated databases for tests: a SQLite file in a temporary directory, or a new
//! PostgreSQL database on the server named by `ZIVIO_TEST_DATABASE_URL`, dropped afterwards
//! (also when the test panics).

use std::str::FromStr;

use sqlx::ConnectOptions as _;
use sqlx::Connection as _;
use sqlx::postgres::PgConnectOptions;

/// One of the statements every claim runs, for tests that check its plan.
pub struct ClaimStatement {
    pub name: &'static str,
    /// With `backend`'s placeholders. Parameters as the store binds them: `$1` the lease token,
    /// `$2` the moment, `$3` the lease end, `$4` and `$6` limits, `$5` a JSON array of webhook
    /// ids.
    pub sql: &'static str,
    /// Whether the store prepares it once and reuses it, so that PostgreSQL may switch to a
    /// generic plan (one that knows no parameter values).
    pub prepared: bool,
}

/// The statements every claim runs on `backend`.
pub fn claim_statements(backend: crate::Backend) -> [ClaimStatement; 4] {
    use crate::common::claims::{CLAIMED, NEXT_DUE};
    let (claim, take_over) = match backend {
        crate::Backend::Sqlite => (crate::sqlite::CLAIM, crate::sqlite::TAKE_OVER_ENDED_LEASES),
        crate::Backend::Postgres => (
            crate::postgres::CLAIM,
            crate::postgres::TAKE_OVER_ENDED_LEASES,
        ),
    };
    let statement = |name, sql, prepared| ClaimStatement {
        name,
        sql,
        prepared,
    };
    [
        statement("take over ended leases", take_over, true),
        statement("claim", claim, true),
        statement("read what was claimed", CLAIMED, false),
        statement("next due", NEXT_DUE, true),
    ]
}

/// The variable that points the PostgreSQL suites at a server.
pub const POSTGRES_URL_VAR: &str = "ZIVIO_TEST_DATABASE_URL";

pub struct TestDatabase {
    pub url: String,
    cleanup: Cleanup,
}

enum Cleanup {
    Sqlite(#[allow(dead_code)] tempfile::TempDir),
    Postgres { server: String, name: String },
}

impl TestDatabase {
    /// A SQLite database file in a new temporary directory.
    pub fn sqlite() -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let url = format!("sqlite://{}", dir.path().join("zivio.db").display());
        Self {
            url,
            cleanup: Cleanup::Sqlite(dir),
        }
    }

    /// A new, empty PostgreSQL database, or `None` when `ZIVIO_TEST_DATABASE_URL` is unset.
    pub async fn postgres() -> Option<Self> {
        let server = std::env::var(POSTGRES_URL_VAR).ok()?;
        Some(Self::postgres_on(&server).await)
    }

    /// A new, empty PostgreSQL database on `server` (a URL whose user may create databases).
    pub async fn postgres_on(server: &str) -> Self {
        let server = server.to_owned();
        let name = format!("zivio_t_{}", uuid::Uuid::new_v4().simple());
        let mut admin = PgConnectOptions::from_str(&server)
            .expect("a PostgreSQL URL")
            .connect()
            .await
            .expect("connect to the PostgreSQL server");
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await
            .expect("create test database");
        admin.close().await.ok();
        let url = PgConnectOptions::from_str(&server)
            .expect("valid URL")
            .database(&name)
            .to_url_lossy()
            .to_string();
        Self {
            url,
            cleanup: Cleanup::Postgres { server, name },
        }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let Cleanup::Postgres { server, name } = &self.cleanup else {
            return;
        };
        let (server, name) = (server.clone(), name.clone());
        // Drop runs outside any async context we can rely on: use a private runtime.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let mut admin = PgConnectOptions::from_str(&server)?.connect().await?;
                sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                )))
                .execute(&mut admin)
                .await?;
                admin.close().await
            })
        })
        .join();
        if let Ok(Err(error)) = dropped {
            eprintln!("could not drop test database: {error}");
        }
    }
}
