//! A CPU profile of one process while it works: `perf record` attached to its id, stopped
//! with SIGINT (how perf is told to write its data and exit).

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result};

pub struct Recorder {
    child: tokio::process::Child,
}

impl Recorder {
    /// Samples `pid` at 499 Hz into `path`, with call graphs unwound from DWARF (release
    /// builds keep no frame pointers); 16 KiB of stack a sample is enough for tokio tasks.
    pub async fn start(pid: u32, path: &Path) -> Result<Recorder> {
        let child = tokio::process::Command::new("perf")
            .args([
                "record",
                "-F",
                "499",
                "--call-graph",
                "dwarf,16384",
                "-p",
                &pid.to_string(),
                "-o",
            ])
            .arg(path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("start perf record (is perf installed?)")?;
        // perf attaches in a few milliseconds; the job should not start before it samples.
        tokio::time::sleep(Duration::from_millis(300)).await;
        Ok(Recorder { child })
    }

    pub async fn stop(mut self) -> Result<()> {
        if let Some(pid) = self.child.id() {
            tokio::process::Command::new("kill")
                .arg("-INT")
                .arg(pid.to_string())
                .status()
                .await?;
        }
        match tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await {
            Ok(status) => {
                status?;
            }
            Err(_) => self.child.kill().await?,
        }
        Ok(())
    }
}
