//! import-svc as a child process, for crash tests: SIGKILL is a crash, where cancelling an
//! in-process `run` would be a graceful stop.

use std::io::Write;
use std::process::{Child, Command, Stdio};

use secrecy::ExposeSecret;

pub struct ImportProcess {
    child: Child,
    _config: tempfile::NamedTempFile,
}

impl ImportProcess {
    /// Starts the `import-svc` binary with the settings of `config` that tests change:
    /// database, broker, queue prefix, auth-svc, callers. It listens on a free port.
    pub fn spawn(config: &import_svc::Config) -> ImportProcess {
        let toml = format!(
            "[service]\nlisten = \"127.0.0.1:0\"\nlog_format = \"json\"\n\
             database.url = {:?}\ncallers = {}\n\n\
             [amqp]\nurl = {:?}\nprefix = {:?}\nreconnect_delay_ms = 200\n\n\
             [auth]\nendpoint = {:?}\ntoken = {:?}\n\n\
             [importer]\nbackoff_base_ms = {}\n",
            config.service.database.url.expose_secret(),
            harness::callers_toml(),
            config.amqp.url.expose_secret(),
            config.amqp.prefix,
            config.auth.endpoint,
            config
                .auth
                .token
                .as_ref()
                .map(|t| t.expose_secret())
                .unwrap_or_default(),
            config.importer.backoff_base_ms,
        );
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(toml.as_bytes()).unwrap();
        let child = Command::new(harness::service_binary("import-svc"))
            .arg("--config")
            .arg(file.path())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        ImportProcess {
            child,
            _config: file,
        }
    }

    /// SIGKILL: no shutdown path runs, exactly like a crash or an OOM kill.
    pub fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for ImportProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
