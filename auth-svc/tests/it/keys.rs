//! Data keys read from files (`keys[].key_file`): a service configured that way serves, and
//! a key setting that cannot give a key stops it, naming the setting.

use std::path::PathBuf;

use auth_svc::config::KeyConfig;
use clio_sim::ClioSim;
use harness::TestDatabase;
use secrecy::SecretString;
use service_runtime::CancellationToken;
use service_runtime::config::Validate;
use tokio::net::TcpListener;

use crate::support::{self, KEY_IDS, Setup, key_material, sim_config};

/// Key files in a directory of their own, removed when dropped.
struct KeyFiles {
    dir: PathBuf,
}

impl KeyFiles {
    /// One file per test key, holding its base64 text the way a secret mount does (with a
    /// trailing newline).
    fn write() -> KeyFiles {
        let dir = std::env::temp_dir().join(format!("auth-svc-keys-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let files = KeyFiles { dir };
        for id in KEY_IDS {
            files.write_private(id, &format!("{}\n", key_material(id)));
        }
        files
    }

    /// Writes `name` readable by its owner only, as a key file must be.
    fn write_private(&self, name: &str, text: &str) {
        std::fs::write(self.path(name), text).unwrap();
        self.chmod(name, 0o600);
    }

    fn chmod(&self, name: &str, mode: u32) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(self.path(name), std::fs::Permissions::from_mode(mode)).unwrap();
    }

    fn path(&self, id: &str) -> PathBuf {
        self.dir.join(id)
    }

    fn configs(&self) -> Vec<KeyConfig> {
        KEY_IDS
            .iter()
            .map(|id| KeyConfig {
                id: (*id).into(),
                key: None,
                key_file: Some(self.path(id)),
            })
            .collect()
    }
}

impl Drop for KeyFiles {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test]
async fn keys_from_files_seal_what_the_same_keys_inline_open() {
    let files = KeyFiles::write();
    let keys = files.configs();
    let stack = support::start(Setup {
        tweak: Box::new(move |config| config.keys = keys),
        ..Setup::default()
    })
    .await;
    let (_, connection) = stack.app_with_connection("kai@firm").await;
    let token = stack.lease_token(&connection.connection_id).await;

    // A replica with the same keys inline opens what the key files sealed: the files
    // were read as the keys they hold, not as some other bytes.
    let replica = stack.replica().await;
    let through_replica = replica
        .lease(&connection.connection_id, &["contacts:read"])
        .await
        .unwrap();
    assert_eq!(through_replica.access_token, token);
    replica.stop().await;
    stack.stop().await;
}

#[tokio::test]
async fn an_unreadable_key_file_stops_start_up_naming_the_setting() {
    let files = KeyFiles::write();
    let sim = ClioSim::start(sim_config()).await.unwrap();
    let database = TestDatabase::create().await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut config = support::test_config(&database, listener.local_addr().unwrap(), &sim);
    config.keys = files.configs();
    config.keys[1].key_file = Some(files.path("missing"));

    let error = auth_svc::run(config, listener, CancellationToken::new())
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("keys[1].key_file"), "{error}");
    assert!(
        error.contains("missing"),
        "the error names the file: {error}"
    );
    sim.stop().await;
}

#[test]
fn key_settings_that_cannot_give_a_key_are_refused_naming_the_setting() {
    let files = KeyFiles::write();
    let valid = || {
        let mut config = auth_svc::Config {
            keys: files.configs(),
            active_key_id: KEY_IDS[0].into(),
            ..auth_svc::Config::default()
        };
        config.audit.token = Some(SecretString::from("audit-writer-credential"));
        config
    };
    valid().validate().unwrap();

    let mut both = valid();
    both.keys[0].key = Some(SecretString::from(key_material("k1")));
    let error = both.validate().unwrap_err().to_string();
    assert!(
        error.contains("keys[0]") && error.contains("exactly one of key and key_file"),
        "{error}"
    );
    assert!(!error.contains(&key_material("k1")), "no key in the error");

    let mut neither = valid();
    neither.keys[1].key_file = None;
    let error = neither.validate().unwrap_err().to_string();
    assert!(error.contains("keys[1]"), "{error}");

    let mut unreadable = valid();
    unreadable.keys[1].key_file = Some(files.path("missing"));
    let error = unreadable.validate().unwrap_err().to_string();
    assert!(error.contains("keys[1].key_file"), "{error}");

    let mut not_a_key = valid();
    files.write_private("short", "c2hvcnQ=\n");
    not_a_key.keys[0].key_file = Some(files.path("short"));
    let error = not_a_key.validate().unwrap_err().to_string();
    assert!(error.contains("keys[0].key_file"), "{error}");
    assert!(
        !error.contains("c2hvcnQ"),
        "no key text in the error: {error}"
    );
}

#[tokio::test]
async fn a_key_file_group_or_others_can_read_stops_start_up_naming_the_file_and_mode() {
    let files = KeyFiles::write();
    files.chmod("k2", 0o640);
    let sim = ClioSim::start(sim_config()).await.unwrap();
    let database = TestDatabase::create().await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut config = support::test_config(&database, listener.local_addr().unwrap(), &sim);
    config.keys = files.configs();

    let error = auth_svc::run(config.clone(), listener, CancellationToken::new())
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("keys[1].key_file"), "{error}");
    assert!(
        error.contains(&files.path("k2").display().to_string()) && error.contains("0640"),
        "the error names the file and its mode: {error}"
    );
    assert!(!error.contains(&key_material("k2")), "no key in the error");

    // World-readable is refused the same way; owner-only is fine.
    files.chmod("k2", 0o604);
    let error = config.keys[1].material(1).unwrap_err().to_string();
    assert!(error.contains("0604"), "{error}");
    files.chmod("k2", 0o400);
    config.keys[1].material(1).unwrap();
    sim.stop().await;
}
