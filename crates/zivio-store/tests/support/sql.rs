//! Reading the test database behind the store's back, for what no store method shows.

use zivio_store::Backend;
use zivio_store::testing::TestDatabase;

/// How many API key digests the database holds.
pub async fn stored_digests(database: &TestDatabase, backend: Backend) -> i64 {
    count_rows(
        database,
        backend,
        "SELECT COUNT(*) FROM api_keys WHERE key_hash IS NOT NULL",
    )
    .await
}

/// What a `SELECT COUNT(*) …` answers.
pub async fn count_rows(database: &TestDatabase, backend: Backend, sql: &'static str) -> i64 {
    match backend {
        Backend::Sqlite => {
            let pool = sqlx::SqlitePool::connect(&database.url).await.unwrap();
            let count = sqlx::query_scalar(sql).fetch_one(&pool).await.unwrap();
            pool.close().await;
            count
        }
        Backend::Postgres => {
            let pool = sqlx::PgPool::connect(&database.url).await.unwrap();
            let count = sqlx::query_scalar(sql).fetch_one(&pool).await.unwrap();
            pool.close().await;
            count
        }
    }
}
