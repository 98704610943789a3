//! A small OpenID Connect provider for the dashboard's sign-in tests: discovery, an
//! authorize endpoint that signs the browser in as whoever the test chose (no login form),
//! a token endpoint checking the client secret, the code's single use and PKCE, ID tokens
//! signed ES256, and its key set. `forge` makes it sign with a key it does not publish.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::{Form, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, KeyPair};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

pub const CLIENT_ID: &str = "clio-dashboard";
pub const CLIENT_SECRET: &str = "test-idp-client-secret";

struct Grant {
    nonce: String,
    challenge: String,
    redirect_uri: String,
    email: String,
}

struct Idp {
    issuer: String,
    key: EcdsaKeyPair,
    /// A key the provider never publishes: tokens signed with it are forgeries.
    other_key: EcdsaKeyPair,
    signs_in_as: Mutex<String>,
    forge: AtomicBool,
    codes: Mutex<HashMap<String, Grant>>,
}

pub struct TestIdp {
    pub issuer: String,
    idp: Arc<Idp>,
    server: harness::SpawnedService,
}

fn key_pair() -> EcdsaKeyPair {
    let rng = SystemRandom::new();
    let pkcs8 =
        EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
    EcdsaKeyPair::from_pkcs8(
        &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        pkcs8.as_ref(),
        &rng,
    )
    .unwrap()
}

impl TestIdp {
    pub async fn start(signs_in_as: &str) -> TestIdp {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let issuer = format!("http://{}", listener.local_addr().unwrap());
        let idp = Arc::new(Idp {
            issuer: issuer.clone(),
            key: key_pair(),
            other_key: key_pair(),
            signs_in_as: Mutex::new(signs_in_as.to_owned()),
            forge: AtomicBool::new(false),
            codes: Mutex::new(HashMap::new()),
        });
        let router = Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/authorize", get(authorize))
            .route("/token", post(token))
            .route("/jwks", get(jwks))
            .with_state(idp.clone());
        let server = harness::SpawnedService::start(move |_, shutdown| async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(async move { shutdown.cancelled().await })
                .await?;
            Ok(())
        })
        .await;
        TestIdp {
            issuer,
            idp,
            server,
        }
    }

    /// Who the next sign-in is.
    pub fn sign_in_as(&self, email: &str) {
        *self.idp.signs_in_as.lock().unwrap() = email.to_owned();
    }

    /// Sign ID tokens with a key the provider does not publish.
    pub fn forge(&self, forge: bool) {
        self.idp.forge.store(forge, Ordering::SeqCst);
    }

    pub async fn stop(self) {
        self.server.shutdown.cancel();
        let _ = self.server.task.await;
    }
}

async fn discovery(State(idp): State<Arc<Idp>>) -> Json<Value> {
    Json(json!({
        "issuer": idp.issuer,
        "authorization_endpoint": format!("{}/authorize", idp.issuer),
        "token_endpoint": format!("{}/token", idp.issuer),
        "jwks_uri": format!("{}/jwks", idp.issuer),
        "response_types_supported": ["code"],
        "id_token_signing_alg_values_supported": ["ES256"],
    }))
}

async fn authorize(
    State(idp): State<Arc<Idp>>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let param = |k: &str| query.get(k).cloned().unwrap_or_default();
    if param("client_id") != CLIENT_ID
        || param("response_type") != "code"
        || param("code_challenge_method") != "S256"
        || !param("scope").split(' ').any(|s| s == "openid")
    {
        return (StatusCode::BAD_REQUEST, "bad authorization request").into_response();
    }
    let code = format!("code-{}", uuid::Uuid::new_v4().simple());
    idp.codes.lock().unwrap().insert(
        code.clone(),
        Grant {
            nonce: param("nonce"),
            challenge: param("code_challenge"),
            redirect_uri: param("redirect_uri"),
            email: idp.signs_in_as.lock().unwrap().clone(),
        },
    );
    let mut back = url::Url::parse(&param("redirect_uri")).unwrap();
    back.query_pairs_mut()
        .append_pair("code", &code)
        .append_pair("state", &param("state"));
    Redirect::to(back.as_str()).into_response()
}

async fn token(
    State(idp): State<Arc<Idp>>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let refuse =
        |error: &str| (StatusCode::BAD_REQUEST, Json(json!({"error": error}))).into_response();
    let expected = format!(
        "Basic {}",
        STANDARD.encode(format!("{CLIENT_ID}:{CLIENT_SECRET}"))
    );
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(expected.as_str()) {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": "invalid_client"})),
        )
            .into_response();
    }
    let field = |k: &str| form.get(k).cloned().unwrap_or_default();
    if field("grant_type") != "authorization_code" {
        return refuse("unsupported_grant_type");
    }
    // Single use: taken out whatever follows.
    let Some(grant) = idp.codes.lock().unwrap().remove(&field("code")) else {
        return refuse("invalid_grant");
    };
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(field("code_verifier").as_bytes()));
    if challenge != grant.challenge || field("redirect_uri") != grant.redirect_uri {
        return refuse("invalid_grant");
    }
    let now = chrono::Utc::now().timestamp();
    let claims = json!({
        "iss": idp.issuer, "sub": format!("sub-{}", grant.email), "aud": CLIENT_ID,
        "iat": now, "exp": now + 300, "nonce": grant.nonce,
        "email": grant.email, "email_verified": true,
    });
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(json!({"alg": "ES256", "kid": "idp-1", "typ": "JWT"}).to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let key = if idp.forge.load(Ordering::SeqCst) {
        &idp.other_key
    } else {
        &idp.key
    };
    let signature = key.sign(&SystemRandom::new(), input.as_bytes()).unwrap();
    let id_token = format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature.as_ref()));
    Json(json!({"id_token": id_token, "access_token": "unused", "token_type": "Bearer"}))
        .into_response()
}

async fn jwks(State(idp): State<Arc<Idp>>) -> Json<Value> {
    let point = idp.key.public_key().as_ref();
    Json(json!({"keys": [{
        "kty": "EC", "crv": "P-256", "kid": "idp-1", "use": "sig", "alg": "ES256",
        "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
        "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
    }]}))
}
