//! A fresh PostgreSQL schema per test, in the database at `ROSTER_TEST_DATABASE_URL`
//! (default `postgres://postgres@127.0.0.1:5432/test`). Shared by the test files that need
//! PostgreSQL; each uses part of it.
#![allow(dead_code)]

use std::str::FromStr;

use roster_engine::store::PostgresStore;
use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection};

const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

pub fn url() -> String {
    std::env::var("ROSTER_TEST_DATABASE_URL").unwrap_or_else(|_| DEFAULT_URL.into())
}

/// A schema for one test, dropped when the test ends (best effort).
pub struct Schema {
    pub name: String,
}

impl Schema {
    pub fn new() -> Self {
        Schema { name: format!("roster_test_{}", uuid::Uuid::new_v4().simple()) }
    }

    /// A store in this schema, migrated.
    pub async fn store(&self) -> PostgresStore {
        let store = match PostgresStore::connect_in_schema(&url(), &self.name).await {
            Ok(store) => store,
            Err(e) => panic!(
                "{e}\nThese tests need a PostgreSQL server: start one with \
                 `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`, \
                 or set ROSTER_TEST_DATABASE_URL to one whose `test` database this user may create schemas in."
            ),
        };
        store.migrate().await.expect("migrate a fresh schema");
        store
    }

    /// A plain connection into this schema, for what the store's contract does not reach.
    pub async fn connection(&self) -> PgConnection {
        let options = PgConnectOptions::from_str(&url()).unwrap().options([("search_path", self.name.as_str())]);
        PgConnection::connect_with(&options).await.expect("connect to the test database")
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        // Drop runs inside the test's runtime, which cannot be blocked on: use a thread of
        // its own with a runtime of its own.
        let name = self.name.clone();
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
            runtime.block_on(async {
                let options = PgConnectOptions::from_str(&url()).ok()?;
                let mut conn = PgConnection::connect_with(&options).await.ok()?;
                sqlx::query(&format!("DROP SCHEMA IF EXISTS {name} CASCADE")).execute(&mut conn).await.ok()?;
                conn.close().await.ok()
            })
        });
        let _ = dropped.join();
    }
}
