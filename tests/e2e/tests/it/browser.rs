//! A real browser for the dashboard's tests: Debian's headless Chromium driven over
//! WebDriver by its chromedriver (both installed by `deploy/local/ensure-deps.sh`), one
//! per test, on a port of its own. Screenshots go to `target/dashboard-screenshots/`, for
//! a person to look at.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::json;
use tokio::process::{Child, Command};

/// Where chromedriver is: `CHROMEDRIVER` or Debian's.
fn chromedriver() -> String {
    std::env::var("CHROMEDRIVER").unwrap_or_else(|_| "/usr/bin/chromedriver".into())
}

fn chromium() -> String {
    std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into())
}

pub struct Browser {
    pub client: Client,
    /// Killed when the browser is dropped (and so with a failing test).
    _driver: Child,
    /// Chromium's profile, removed with the browser (Chromium's own would stay in /tmp).
    _profile: tempfile::TempDir,
}

impl Browser {
    pub async fn start() -> Browser {
        let profile = tempfile::tempdir().unwrap();
        for _ in 0..5 {
            let port = free_port();
            let driver = Command::new(chromedriver())
                .arg(format!("--port={port}"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .unwrap_or_else(|e| {
                    panic!(
                        "cannot start {} ({e}): deploy/local/ensure-deps.sh installs chromium and chromium-driver",
                        chromedriver()
                    )
                });
            if let Some(client) = connect(port, profile.path()).await {
                return Browser {
                    client,
                    _driver: driver,
                    _profile: profile,
                };
            }
        }
        panic!("chromedriver never answered");
    }

    pub async fn goto(&self, url: &str) {
        self.client.goto(url).await.unwrap();
    }

    /// Types into the field `css` (after clearing it).
    pub async fn fill(&self, css: &str, text: &str) {
        let field = self.client.find(Locator::Css(css)).await.unwrap();
        field.clear().await.unwrap();
        field.send_keys(text).await.unwrap();
    }

    pub async fn click(&self, css: &str) {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no {css} on the page: {e}"))
            .click()
            .await
            .unwrap();
    }

    /// Clicks the button `css` that submits a form, and waits until the browser has left
    /// the page (its old document is gone), so what is read next is the answer's.
    pub async fn submit(&self, css: &str) {
        let before = self.client.find(Locator::Css("html")).await.unwrap();
        self.click(css).await;
        let give_up = tokio::time::Instant::now() + Duration::from_secs(10);
        while before.tag_name().await.is_ok() {
            assert!(
                tokio::time::Instant::now() < give_up,
                "{css} did not leave the page"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The text of the element `css`, waiting for it to appear.
    pub async fn text(&self, css: &str) -> String {
        let found = self
            .client
            .wait()
            .at_most(Duration::from_secs(10))
            .for_element(Locator::Css(css))
            .await;
        match found {
            Ok(element) => element.text().await.unwrap(),
            Err(e) => {
                let url = self.client.current_url().await.map(|u| u.to_string());
                let page = self.client.source().await.unwrap_or_default();
                panic!("{css} never appeared ({e}) at {url:?}:\n{page}")
            }
        }
    }

    /// The attribute of the element `css`; `None` when either is missing (also while a
    /// page is reloading).
    pub async fn attr(&self, css: &str, attribute: &str) -> Option<String> {
        let element = self.client.find(Locator::Css(css)).await.ok()?;
        element.attr(attribute).await.ok().flatten()
    }

    pub async fn texts(&self, css: &str) -> Vec<String> {
        let mut texts = Vec::new();
        for element in self.client.find_all(Locator::Css(css)).await.unwrap() {
            texts.push(element.text().await.unwrap());
        }
        texts
    }

    /// Signs in at the dashboard `base` as `name`.
    pub async fn sign_in(&self, base: &str, name: &str, password: &str) {
        self.goto(&format!("{base}/signin")).await;
        self.fill("#name", name).await;
        self.fill("#password", password).await;
        self.submit("#sign-in").await;
        assert_eq!(self.text("#signed-in-as").await, name);
    }

    /// Saves what the browser shows as `target/dashboard-screenshots/<name>.png`.
    pub async fn screenshot(&self, name: &str) {
        let png = self.client.screenshot().await.unwrap();
        let dir = screenshots_dir();
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
    }

    pub async fn close(self) {
        self.client.close().await.unwrap();
    }
}

fn screenshots_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"),
        PathBuf::from,
    );
    target.join("dashboard-screenshots")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A WebDriver session with headless Chromium, once chromedriver listens.
async fn connect(port: u16, profile: &std::path::Path) -> Option<Client> {
    let capabilities = json!({
        "goog:chromeOptions": {
            "binary": chromium(),
            // Root in CI: no sandbox; no GPU and a fixed window for stable screenshots.
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", "--window-size=1280,900",
                     format!("--user-data-dir={}", profile.display())],
        }
    });
    let serde_json::Value::Object(capabilities) = capabilities else {
        unreachable!()
    };
    let give_up = tokio::time::Instant::now() + Duration::from_secs(20);
    while tokio::time::Instant::now() < give_up {
        match ClientBuilder::new(HttpConnector::new())
            .capabilities(capabilities.clone())
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
        {
            Ok(client) => return Some(client),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    None
}
