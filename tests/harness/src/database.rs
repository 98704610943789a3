//! A Postgres database per test, dropped when the test ends.

use secrecy::SecretString;
use sqlx::{Connection, PgConnection};

/// The maintenance database tests create their databases from
/// (`CLIO_CONNECT_TEST_PG` overrides).
pub fn postgres_admin_url() -> String {
    std::env::var("CLIO_CONNECT_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A fresh, empty database. Dropped (with its connections) when this value is.
pub struct TestDatabase {
    pub name: String,
    pub url: String,
}

impl TestDatabase {
    pub async fn create() -> TestDatabase {
        let name = format!("cc_test_{}", uuid::Uuid::new_v4().simple());
        let admin = postgres_admin_url();
        let mut conn = PgConnection::connect(&admin)
            .await
            .unwrap_or_else(|e| panic!("cannot reach test Postgres at {admin}: {e}"));
        sqlx::query(&format!("CREATE DATABASE \"{name}\""))
            .execute(&mut conn)
            .await
            .expect("create test database");
        let url = replace_database(&admin, &name);
        TestDatabase { name, url }
    }

    pub fn secret_url(&self) -> SecretString {
        SecretString::from(self.url.clone())
    }

    /// The server's address, for putting a [`crate::TcpProxy`] in front of it.
    pub fn server_address(&self) -> std::net::SocketAddr {
        let url = url::Url::parse(&self.url).expect("database URL");
        let host = url.host_str().expect("database host");
        let port = url.port().unwrap_or(5432);
        std::net::ToSocketAddrs::to_socket_addrs(&(host, port))
            .expect("resolve database host")
            .next()
            .expect("database address")
    }

    /// The same database reached through `proxy`.
    pub fn secret_url_via(&self, proxy: std::net::SocketAddr) -> SecretString {
        SecretString::from(self.url_via(proxy).to_string())
    }

    /// This database through a TLS front at `front`, the server's certificate verified
    /// against `ca` and its name checked (`sslmode=verify-full`).
    pub fn secret_url_verify_full(
        &self,
        front: std::net::SocketAddr,
        ca: &std::path::Path,
    ) -> SecretString {
        let mut url = self.url_via(front);
        url.query_pairs_mut()
            .append_pair("sslmode", "verify-full")
            .append_pair("sslrootcert", &ca.display().to_string());
        SecretString::from(url.to_string())
    }

    fn url_via(&self, proxy: std::net::SocketAddr) -> url::Url {
        let mut url = url::Url::parse(&self.url).expect("database URL");
        url.set_host(Some(&proxy.ip().to_string()))
            .expect("proxy host");
        url.set_port(Some(proxy.port())).expect("proxy port");
        url
    }

    /// A connection for raw inspection of what a service stored.
    pub async fn connect(&self) -> PgConnection {
        PgConnection::connect(&self.url)
            .await
            .expect("connect to test database")
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop may run inside a runtime, which cannot block; a side thread with its own
        // small runtime does the cleanup.
        let handle = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            if let Ok(runtime) = runtime {
                runtime.block_on(async {
                    if let Ok(mut conn) = PgConnection::connect(&postgres_admin_url()).await {
                        let _ = sqlx::query(&format!(
                            "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
                        ))
                        .execute(&mut conn)
                        .await;
                    }
                });
            }
        });
        let _ = handle.join();
    }
}

fn replace_database(url: &str, name: &str) -> String {
    match url.rsplit_once('/') {
        Some((base, _)) => format!("{base}/{name}"),
        None => format!("{url}/{name}"),
    }
}
