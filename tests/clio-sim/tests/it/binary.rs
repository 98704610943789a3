//! The `clio-sim` binary: flags, printed addresses, apps from a file.

use std::process::Stdio;

use clio_sim::{AdminClient, Decision, Region};
use reqwest::StatusCode;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use crate::support::*;

#[tokio::test]
async fn the_binary_serves_the_chosen_regions_on_free_ports() {
    let dir = std::env::temp_dir().join(format!("clio-sim-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let apps = dir.join("apps.json");
    let spec = serde_json::json!([{
        "region": "eu", "client_id": CLIENT_ID, "client_secret": SECRET,
        "redirect_uris": [REDIRECT], "permissions": ["contacts:read", "webhooks:write"]
    }]);
    std::fs::write(&apps, spec.to_string()).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_clio-sim"))
        .args([
            "--base-port",
            "0",
            "--regions",
            "us,eu",
            "--size",
            "25",
            "--seed",
            "3",
            "--rate-limit",
            "5/60s",
            "--token-ttl",
            "120",
            "--app-rate-limit",
            "100/1m",
            "--webhooks-allow-http",
            "--webhook-retry-delays-ms",
            "10,20",
        ])
        .arg("--apps")
        .arg(&apps)
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut urls = std::collections::BTreeMap::new();
    for _ in 0..2 {
        let line = lines.next_line().await.unwrap().unwrap();
        let (region, url) = line.split_once(' ').unwrap();
        let region: Region = region.strip_prefix("region=").unwrap().parse().unwrap();
        urls.insert(region, url.strip_prefix("url=").unwrap().to_owned());
    }
    assert_eq!(
        urls.keys().copied().collect::<Vec<_>>(),
        [Region::Us, Region::Eu]
    );
    let eu = urls[&Region::Eu].clone();
    let admin = AdminClient::new(urls);
    let consent = admin
        .consent(
            &authorize_url(&eu, CLIENT_ID, REDIRECT, "s"),
            1,
            Decision::Allow,
        )
        .await
        .unwrap();
    let code = consent
        .code
        .expect("the app from --apps is registered in eu");
    let (status, body) = token_request(
        &eu,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("client_id", CLIENT_ID),
            ("client_secret", SECRET),
        ],
    )
    .await;
    assert_eq!(
        (status, body["expires_in"].as_u64()),
        (StatusCode::OK, Some(120))
    );
    let access = body["access_token"].as_str().unwrap();
    let (contacts, _) = all_pages(&eu, access, "/api/v4/contacts?limit=10").await;
    assert_eq!(contacts.len(), 25);
    let answer = get(&eu, access, "/api/v4/contacts?limit=1").await;
    assert_eq!(answer.header("x-ratelimit-limit"), Some("5"));
    let hook = serde_json::json!({"data": {
        "url": "http://127.0.0.1:9/hook", "model": "contact", "fields": "id,etag",
    }});
    let created = send_json(
        http().post(format!("{eu}/api/v4/webhooks.json")),
        access,
        &hook,
    )
    .await;
    assert_eq!(
        created.status,
        StatusCode::CREATED,
        "--webhooks-allow-http takes loopback http: {}",
        created.body
    );
    child.kill().await.unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn bad_flags_are_refused() {
    let output = Command::new(env!("CARGO_BIN_EXE_clio-sim"))
        .args(["--rate-limit", "fifty"])
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("rate-limit"));
    let output = Command::new(env!("CARGO_BIN_EXE_clio-sim"))
        .args(["--app-rate-limit", "5/minute"])
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("app-rate-limit"));
}
