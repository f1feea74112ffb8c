//! Throwaway databases, so tests and benchmarks on a shared PostgreSQL
//! server never see each other's rows or depend on leftovers.

use sqlx::postgres::PgConnection;
use sqlx::{Connection, Executor};

use crate::StorageError;

/// A fresh, empty database on a PostgreSQL server, dropped (connections
/// and all) when this guard is dropped.
#[derive(Debug)]
pub struct TestDatabase {
    admin_url: String,
    name: String,
    url: String,
}

impl TestDatabase {
    /// The machine's own server, as tests and benchmarks use it by default.
    pub const DEFAULT_ADMIN_URL: &'static str = "postgres://postgres@127.0.0.1:5432/postgres";

    /// Creates `rc_test_<uuid>` through `admin_url`, a URL of an existing
    /// database on the server with the right to create databases.
    pub async fn create(admin_url: &str) -> Result<Self, StorageError> {
        let name = format!("rc_test_{}", uuid::Uuid::new_v4().simple());
        let mut admin = PgConnection::connect(admin_url)
            .await
            .map_err(StorageError::unavailable)?;
        admin
            .execute(format!("CREATE DATABASE \"{name}\"").as_str())
            .await
            .map_err(StorageError::unavailable)?;
        let _ = admin.close().await;
        let url = with_database(admin_url, &name)?;
        Ok(Self {
            admin_url: admin_url.to_owned(),
            name,
            url,
        })
    }

    /// The database's URL, for [`crate::connect`].
    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        // Drop runs inside the test's runtime, which cannot block on a
        // future; a short-lived thread with its own runtime can.
        let admin_url = self.admin_url.clone();
        let name = self.name.clone();
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            runtime.block_on(async {
                let mut admin = PgConnection::connect(&admin_url)
                    .await
                    .map_err(|e| e.to_string())?;
                admin
                    .execute(format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)").as_str())
                    .await
                    .map_err(|e| e.to_string())?;
                let _ = admin.close().await;
                Ok::<(), String>(())
            })
        })
        .join();
        match dropped {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(database = %self.name, error = %e, "test database not dropped")
            }
            Err(_) => {
                tracing::warn!(database = %self.name, "test database not dropped: thread panicked")
            }
        }
    }
}

/// `admin_url` with its database name replaced (query string kept).
fn with_database(admin_url: &str, name: &str) -> Result<String, StorageError> {
    let (base, query) = match admin_url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (admin_url, None),
    };
    let authority_start = base.find("://").map(|i| i + 3).ok_or_else(|| {
        StorageError::Unsupported("the admin URL must look like postgres://host/db".into())
    })?;
    let host_end = base[authority_start..]
        .find('/')
        .map_or(base.len(), |i| authority_start + i);
    let mut url = format!("{}/{name}", &base[..host_end]);
    if let Some(query) = query {
        url.push('?');
        url.push_str(query);
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn the_database_name_is_replaced_and_the_rest_kept() {
        let cases = [
            ("postgres://u@h:5432/postgres", "postgres://u@h:5432/x"),
            ("postgres://u@h", "postgres://u@h/x"),
            (
                "postgresql://u:p@h/postgres?sslmode=disable",
                "postgresql://u:p@h/x?sslmode=disable",
            ),
        ];
        for (admin, want) in cases {
            assert_eq!(with_database(admin, "x").expect("valid"), want);
        }
        assert!(with_database("nonsense", "x").is_err());
    }
}
