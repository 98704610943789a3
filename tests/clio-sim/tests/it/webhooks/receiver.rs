//! A webhook receiver as an app would run one, on `127.0.0.1:0`: it completes the
//! handshake (or does not, as told), verifies `X-Hook-Signature` with the secret the
//! handshake brought, refuses what does not verify with 401, and answers the rest as
//! scripted. It keeps every request it got, in order.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use ring::hmac;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// How the receiver answers a handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Handshake {
    /// 200 with the same `X-Hook-Secret`: the webhook is enabled at once.
    Echo,
    /// 200 without the header: the app activates later (it keeps the secret).
    Keep,
}

/// One request the receiver got.
#[derive(Clone, Debug)]
pub struct Received {
    pub handshake_secret: Option<String>,
    pub signature: Option<String>,
    pub body: String,
    /// The signature is the HMAC-SHA256 (hex) of the body under the handshake's secret.
    pub verified: bool,
    pub answered: u16,
}

impl Received {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap()
    }

    pub fn event(&self) -> String {
        self.json()["meta"]["event"].as_str().unwrap().to_owned()
    }
}

#[derive(Debug)]
struct Inner {
    handshake: Handshake,
    secret: Option<String>,
    /// Statuses for the next verified deliveries; 200 once used up.
    script: VecDeque<u16>,
    received: Vec<Received>,
}

/// What stops the server: the shutdown signal and the server's task.
type Stop = (oneshot::Sender<()>, JoinHandle<()>);

#[derive(Clone, Debug)]
pub struct Receiver {
    pub url: String,
    inner: Arc<Mutex<Inner>>,
    stop: Arc<Mutex<Option<Stop>>>,
}

impl Receiver {
    pub async fn start(handshake: Handshake) -> Receiver {
        let inner = Arc::new(Mutex::new(Inner {
            handshake,
            secret: None,
            script: VecDeque::new(),
            received: Vec::new(),
        }));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/clio/hook", listener.local_addr().unwrap());
        let app = Router::new().fallback(take).with_state(inner.clone());
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await;
        });
        Receiver {
            url,
            inner,
            stop: Arc::new(Mutex::new(Some((stop, server)))),
        }
    }

    /// Stops listening and closes every connection: from now on the receiver cannot be
    /// reached.
    pub async fn stop(&self) {
        let Some((stop, server)) = self.stop.lock().unwrap().take() else {
            return;
        };
        let _ = stop.send(());
        server.await.unwrap();
    }

    /// Answers the next verified deliveries with these statuses (then 200 again).
    pub fn answer_next(&self, statuses: &[u16]) {
        self.inner.lock().unwrap().script.extend(statuses);
    }

    /// The secret the handshake brought.
    pub fn secret(&self) -> Option<String> {
        self.inner.lock().unwrap().secret.clone()
    }

    pub fn received(&self) -> Vec<Received> {
        self.inner.lock().unwrap().received.clone()
    }

    /// Deliveries (not handshakes), in arrival order.
    pub fn deliveries(&self) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|received| received.handshake_secret.is_none())
            .collect()
    }

    /// The verified deliveries the receiver took (2xx), in arrival order.
    pub fn taken(&self) -> Vec<Received> {
        self.deliveries()
            .into_iter()
            .filter(|received| received.verified && received.answered < 300)
            .collect()
    }

    /// Polls until `done` holds for what was received; panics after 10 s.
    pub async fn wait_until(&self, what: &str, done: impl Fn(&[Received]) -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let received = self.received();
            if done(&received) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "receiver never saw {what}: {received:#?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// The hex HMAC-SHA256 of `body` under `secret`, computed here from the definition (not
/// with the simulator's code), so the test checks the simulator against Clio's rule.
pub fn hmac_hex(secret: &str, body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    hex::encode(hmac::sign(&key, body).as_ref())
}

fn verify(secret: Option<&str>, signature: Option<&str>, body: &[u8]) -> bool {
    let (Some(secret), Some(signature)) = (secret, signature) else {
        return false;
    };
    let Ok(tag) = hex::decode(signature) else {
        return false;
    };
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    hmac::verify(&key, body, &tag).is_ok()
}

async fn take(State(inner): State<Arc<Mutex<Inner>>>, headers: HeaderMap, body: Bytes) -> Response {
    let header = |name: &str| {
        headers
            .get(name)
            .map(|value| value.to_str().unwrap().to_owned())
    };
    let handshake_secret = header("x-hook-secret");
    let signature = header("x-hook-signature");
    let text = String::from_utf8_lossy(&body).into_owned();
    let mut inner = inner.lock().unwrap();
    if let Some(secret) = &handshake_secret {
        inner.secret = Some(secret.clone());
        inner.received.push(Received {
            handshake_secret: handshake_secret.clone(),
            signature,
            body: text,
            verified: false,
            answered: 200,
        });
        let mut response = StatusCode::OK.into_response();
        if inner.handshake == Handshake::Echo {
            response
                .headers_mut()
                .insert("x-hook-secret", HeaderValue::from_str(secret).unwrap());
        }
        return response;
    }
    let verified = verify(inner.secret.as_deref(), signature.as_deref(), &body);
    let answered = if verified {
        inner.script.pop_front().unwrap_or(200)
    } else {
        401
    };
    inner.received.push(Received {
        handshake_secret: None,
        signature,
        body: text,
        verified,
        answered,
    });
    StatusCode::from_u16(answered).unwrap().into_response()
}
