//! Locating the workspace's service binaries, for tests that run them as processes
//! (start-up failures, SIGKILL crash tests).

use std::path::PathBuf;

/// `target/<profile>/<name>`, found from the running test executable
/// (`target/<profile>/deps/<test>`). A workspace test run builds the binary of every
/// package that has integration tests (`tests/`), so each binary driven here belongs to
/// such a package (clioctl's `tests/binary.rs` is there for that too).
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
