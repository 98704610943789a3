//! Locating the workspace's service binaries, for tests that run them as processes
//! (start-up failures, SIGKILL crash tests).

use std::path::PathBuf;

/// `target/<profile>/<name>`, found from the running test executable
/// (`target/<profile>/deps/<test>`). `cargo test`/`nextest` build every binary of the
/// workspace before running tests.
pub fn service_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("test executable lives in target/<profile>/deps");
    let path = profile_dir.join(name);
    assert!(
        path.exists(),
        "{} is not built; run the tests through cargo",
        path.display()
    );
    path
}
