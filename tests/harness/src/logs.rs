//! Captures a test process's logs so a test can assert that no secret was written.

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

/// Everything logged in this process since [`capture_logs`] was first called.
#[derive(Clone, Default)]
pub struct CapturedLogs(Arc<Mutex<Vec<u8>>>);

impl CapturedLogs {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("log buffer")).into_owned()
    }

    /// Panics naming the secret (by label, never its value) if any log line holds it.
    pub fn assert_free_of(&self, label: &str, secret: &str) {
        assert!(!secret.is_empty(), "empty secret for {label}");
        assert!(!self.text().contains(secret), "logs contain the {label}");
    }
}

struct Writer(CapturedLogs);

impl Write for Writer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.0.lock().expect("log buffer").extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Installs (once per process) a subscriber that records every level into a buffer, in
/// the JSON format production uses, with all fields and spans.
pub fn capture_logs() -> CapturedLogs {
    static LOGS: OnceLock<CapturedLogs> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = CapturedLogs::default();
        let sink = logs.clone();
        let _ = tracing_subscriber::fmt()
            .json()
            .with_env_filter(tracing_subscriber::EnvFilter::new(
                "trace,h2=info,hyper=info,tower=info",
            ))
            .with_writer(move || Writer(sink.clone()))
            .try_init();
        logs
    })
    .clone()
}
