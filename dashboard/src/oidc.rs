//! Sign-in through the firm's OpenID Connect provider (Entra ID, Okta, Google Workspace,
//! Keycloak, ...): the authorization-code flow with PKCE, a nonce and a single-use state
//! bound to the browser, the ID token fetched from the provider's token endpoint and its
//! signature (RS256 or ES256, keys from the provider's JWKS), issuer, audience, expiry and
//! nonce checked. The person is the configured `[[people]]` entry whose name equals the
//! token's `person_claim` (`email` by default, refused when `email_verified` is false): the
//! provider proves who signs in, the configuration still decides what they may do.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use secrecy::ExposeSecret;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::config::OidcConfig;
use crate::people::random_token;

/// How long a started sign-in may take at the provider.
const PENDING_FOR: Duration = Duration::from_secs(600);
/// Clock skew allowed on `exp` and `iat`.
const LEEWAY_SECS: i64 = 60;
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a sign-in through the provider failed, in words for the sign-in page.
#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    #[error("the identity provider could not be reached or answered badly: {0}")]
    Provider(String),
    #[error("this sign-in was not started here, was used already or took too long; start again")]
    UnknownState,
    #[error("the identity provider refused: {0}")]
    Refused(String),
    #[error("the identity provider's answer failed its checks: {0}")]
    InvalidToken(String),
}

/// What a started sign-in remembers until the provider sends the browser back.
struct Pending {
    nonce: String,
    verifier: String,
    started: Instant,
}

/// Sign-ins under way, by state: at most `capacity`, each for [`PENDING_FOR`]. Starting one
/// needs no sign-in, so a flood of starts must not lock everyone out: when full, the
/// oldest goes (its browser starts again), never the newest.
struct PendingSignIns {
    by_state: HashMap<String, Pending>,
    capacity: usize,
}

impl PendingSignIns {
    fn new(capacity: usize) -> PendingSignIns {
        PendingSignIns {
            by_state: HashMap::new(),
            capacity: capacity.max(1),
        }
    }

    fn insert(&mut self, state: String, pending: Pending, now: Instant) {
        self.by_state
            .retain(|_, p| now.saturating_duration_since(p.started) < PENDING_FOR);
        if self.by_state.len() >= self.capacity
            && let Some(oldest) = self
                .by_state
                .iter()
                .min_by_key(|(_, p)| p.started)
                .map(|(state, _)| state.clone())
        {
            self.by_state.remove(&oldest);
        }
        self.by_state.insert(state, pending);
    }

    /// The sign-in `state` started, used up; none if unknown, used or too old.
    fn take(&mut self, state: &str, now: Instant) -> Option<Pending> {
        self.by_state
            .remove(state)
            .filter(|p| now.saturating_duration_since(p.started) < PENDING_FOR)
    }
}

#[derive(Debug, Clone, Deserialize)]
struct Metadata {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
    jwks_uri: String,
}

#[derive(Debug, Clone, Deserialize)]
struct Jwk {
    kty: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    n: Option<String>,
    #[serde(default)]
    e: Option<String>,
    #[serde(default)]
    crv: Option<String>,
    #[serde(default)]
    x: Option<String>,
    #[serde(default)]
    y: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Jwks {
    keys: Vec<Jwk>,
}

#[derive(Deserialize)]
struct TokenResponse {
    id_token: Option<String>,
}

#[derive(Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
}

pub struct Provider {
    config: OidcConfig,
    http: reqwest::Client,
    metadata: tokio::sync::Mutex<Option<Metadata>>,
    keys: tokio::sync::Mutex<Vec<Jwk>>,
    pending: Mutex<PendingSignIns>,
}

/// Where to send the browser, and the state its cookie must carry back.
pub struct Start {
    pub url: String,
    pub state: String,
}

impl Provider {
    pub fn new(config: OidcConfig) -> Result<Provider, OidcError> {
        let http = reqwest::Client::builder()
            .timeout(HTTP_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| OidcError::Provider(e.to_string()))?;
        Ok(Provider {
            config,
            http,
            metadata: tokio::sync::Mutex::new(None),
            keys: tokio::sync::Mutex::new(Vec::new()),
            pending: Mutex::new(PendingSignIns::new(10_000)),
        })
    }

    /// The button's words.
    pub fn label(&self) -> &str {
        &self.config.label
    }

    /// The provider's endpoints, read once from its discovery document (again after a
    /// failure, so a provider down at start does not need a restart).
    async fn metadata(&self) -> Result<Metadata, OidcError> {
        let mut cached = self.metadata.lock().await;
        if let Some(metadata) = cached.as_ref() {
            return Ok(metadata.clone());
        }
        let url = format!(
            "{}/.well-known/openid-configuration",
            self.config.issuer.trim_end_matches('/')
        );
        let metadata: Metadata = self.get_json(&url).await?;
        if metadata.issuer.trim_end_matches('/') != self.config.issuer.trim_end_matches('/') {
            return Err(OidcError::Provider(format!(
                "its discovery document names issuer {}, not {}",
                metadata.issuer, self.config.issuer
            )));
        }
        *cached = Some(metadata.clone());
        Ok(metadata)
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, url: &str) -> Result<T, OidcError> {
        let response = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| OidcError::Provider(format!("{url}: {e}")))?;
        if !response.status().is_success() {
            return Err(OidcError::Provider(format!("{url}: {}", response.status())));
        }
        response
            .json()
            .await
            .map_err(|e| OidcError::Provider(format!("{url}: {e}")))
    }

    fn lock_pending(&self) -> std::sync::MutexGuard<'_, PendingSignIns> {
        self.pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Starts a sign-in: a fresh state, nonce and PKCE verifier, and the provider's URL.
    pub async fn start(&self) -> Result<Start, OidcError> {
        let metadata = self.metadata().await?;
        let (state, nonce, verifier) = (random_token(), random_token(), random_token());
        let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
        let mut url = url::Url::parse(&metadata.authorization_endpoint)
            .map_err(|e| OidcError::Provider(format!("authorization_endpoint: {e}")))?;
        url.query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", &self.config.client_id)
            .append_pair("redirect_uri", &self.config.redirect_url)
            .append_pair("scope", &self.config.scopes.join(" "))
            .append_pair("state", &state)
            .append_pair("nonce", &nonce)
            .append_pair("code_challenge", &challenge)
            .append_pair("code_challenge_method", "S256");
        let now = Instant::now();
        self.lock_pending().insert(
            state.clone(),
            Pending {
                nonce,
                verifier,
                started: now,
            },
            now,
        );
        Ok(Start {
            url: url.into(),
            state,
        })
    }

    /// Finishes a sign-in: `state` (from the query, equal to the browser's cookie, checked
    /// by the caller) is used up, the code exchanged, the ID token checked. Returns the
    /// value of the person claim.
    pub async fn finish(&self, state: &str, code: &str) -> Result<String, OidcError> {
        let pending = self
            .lock_pending()
            .take(state, Instant::now())
            .ok_or(OidcError::UnknownState)?;
        let metadata = self.metadata().await?;
        let response = self
            .http
            .post(&metadata.token_endpoint)
            .basic_auth(
                form_encode(&self.config.client_id),
                Some(form_encode(self.config.client_secret.expose_secret())),
            )
            .form(&[
                ("grant_type", "authorization_code"),
                ("code", code),
                ("redirect_uri", &self.config.redirect_url),
                ("code_verifier", &pending.verifier),
            ])
            .send()
            .await
            .map_err(|e| OidcError::Provider(format!("token endpoint: {e}")))?;
        if !response.status().is_success() {
            let status = response.status();
            let body = response.text().await.unwrap_or_default();
            return Err(OidcError::Refused(format!(
                "token endpoint {status}: {}",
                body.chars().take(200).collect::<String>()
            )));
        }
        let token: TokenResponse = response
            .json()
            .await
            .map_err(|e| OidcError::Provider(format!("token endpoint: {e}")))?;
        let id_token = token
            .id_token
            .ok_or_else(|| OidcError::InvalidToken("no id_token in the answer".into()))?;
        let claims = self.verified_claims(&metadata, &id_token).await?;
        check_claims(
            &claims,
            &metadata.issuer,
            &self.config.client_id,
            &pending.nonce,
            chrono::Utc::now().timestamp(),
        )?;
        person_of(&claims, &self.config.person_claim)
    }

    /// The token's claims once its signature holds under one of the provider's keys (the
    /// key set is read again for a key id it does not have: keys rotate).
    async fn verified_claims(
        &self,
        metadata: &Metadata,
        token: &str,
    ) -> Result<serde_json::Value, OidcError> {
        let kid = header(token)?.kid;
        let mut keys = self.keys.lock().await;
        let known = |keys: &[Jwk]| keys.iter().any(|k| kid.is_none() || k.kid == kid);
        if !known(&keys) {
            let jwks: Jwks = self.get_json(&metadata.jwks_uri).await?;
            *keys = jwks.keys;
        }
        verify(token, &keys)
    }
}

/// `application/x-www-form-urlencoded` of a client id or secret for HTTP Basic (RFC 6749,
/// 2.3.1).
fn form_encode(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

fn part(token: &str, index: usize) -> Result<Vec<u8>, OidcError> {
    let text = token
        .split('.')
        .nth(index)
        .ok_or_else(|| OidcError::InvalidToken("not a signed JWT".into()))?;
    URL_SAFE_NO_PAD
        .decode(text)
        .map_err(|_| OidcError::InvalidToken("not base64url".into()))
}

fn header(token: &str) -> Result<Header, OidcError> {
    serde_json::from_slice(&part(token, 0)?)
        .map_err(|_| OidcError::InvalidToken("unreadable header".into()))
}

fn b64(field: &Option<String>, name: &str) -> Result<Vec<u8>, OidcError> {
    let text = field
        .as_deref()
        .ok_or_else(|| OidcError::InvalidToken(format!("a key without {name}")))?;
    URL_SAFE_NO_PAD
        .decode(text)
        .map_err(|_| OidcError::InvalidToken(format!("a key's {name} is not base64url")))
}

/// Checks the JWT's signature under the matching key of `keys` and returns its claims.
/// Only RS256 and ES256 are taken (never `none`, never a MAC whose secret is public).
fn verify(token: &str, keys: &[Jwk]) -> Result<serde_json::Value, OidcError> {
    use ring::signature;

    if token.split('.').count() != 3 {
        return Err(OidcError::InvalidToken("not a signed JWT".into()));
    }
    let header = header(token)?;
    let signing_input = token.rsplit_once('.').map_or("", |(input, _)| input);
    let signature_bytes = part(token, 2)?;
    let candidates = keys
        .iter()
        .filter(|k| header.kid.is_none() || k.kid == header.kid);
    let mut verified = false;
    for key in candidates {
        verified = match (header.alg.as_str(), key.kty.as_str()) {
            ("RS256", "RSA") => {
                let (n, e) = (b64(&key.n, "n")?, b64(&key.e, "e")?);
                signature::RsaPublicKeyComponents { n: &n, e: &e }
                    .verify(
                        &signature::RSA_PKCS1_2048_8192_SHA256,
                        signing_input.as_bytes(),
                        &signature_bytes,
                    )
                    .is_ok()
            }
            ("ES256", "EC") if key.crv.as_deref() == Some("P-256") => {
                let mut point = vec![0x04];
                point.extend(b64(&key.x, "x")?);
                point.extend(b64(&key.y, "y")?);
                signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, &point)
                    .verify(signing_input.as_bytes(), &signature_bytes)
                    .is_ok()
            }
            ("RS256" | "ES256", _) => false,
            (alg, _) => {
                return Err(OidcError::InvalidToken(format!(
                    "signed with {alg}; only RS256 and ES256 are accepted"
                )));
            }
        };
        if verified {
            break;
        }
    }
    if !verified {
        return Err(OidcError::InvalidToken(
            "the signature does not verify under the provider's keys".into(),
        ));
    }
    serde_json::from_slice(&part(token, 1)?)
        .map_err(|_| OidcError::InvalidToken("unreadable claims".into()))
}

/// The standard checks of an ID token's claims (OpenID Connect Core 3.1.3.7).
fn check_claims(
    claims: &serde_json::Value,
    issuer: &str,
    client_id: &str,
    nonce: &str,
    now: i64,
) -> Result<(), OidcError> {
    let invalid = |what: &str| Err(OidcError::InvalidToken(what.to_owned()));
    if claims["iss"].as_str() != Some(issuer) {
        return invalid("issued by another issuer");
    }
    let audiences: Vec<&str> = match &claims["aud"] {
        serde_json::Value::String(aud) => vec![aud.as_str()],
        serde_json::Value::Array(auds) => auds.iter().filter_map(|a| a.as_str()).collect(),
        _ => Vec::new(),
    };
    if !audiences.contains(&client_id) {
        return invalid("issued for another client");
    }
    if audiences.len() > 1 && claims["azp"].as_str() != Some(client_id) {
        return invalid("several audiences and this client is not the authorized party");
    }
    match claims["exp"].as_i64() {
        Some(exp) if exp + LEEWAY_SECS > now => {}
        _ => return invalid("expired"),
    }
    if claims["iat"]
        .as_i64()
        .is_some_and(|iat| iat > now + LEEWAY_SECS)
    {
        return invalid("issued in the future");
    }
    if claims["nonce"].as_str() != Some(nonce) {
        return invalid("the nonce is not this sign-in's");
    }
    Ok(())
}

/// The person claim's value; an `email` the provider says is unverified is refused.
fn person_of(claims: &serde_json::Value, claim: &str) -> Result<String, OidcError> {
    if claim == "email" && claims["email_verified"].as_bool() == Some(false) {
        return Err(OidcError::InvalidToken(
            "the email address is not verified".into(),
        ));
    }
    claims[claim]
        .as_str()
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| OidcError::InvalidToken(format!("no {claim} claim")))
}

/// Secrets never show in debug output.
impl std::fmt::Debug for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provider")
            .field("issuer", &self.config.issuer)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use ring::rand::SystemRandom;
    use ring::signature::{self, EcdsaKeyPair, KeyPair, RsaKeyPair};
    use serde_json::json;

    use super::*;

    /// A 2048-bit RSA key made for these tests only (`openssl genpkey`, PKCS#1 DER).
    const TEST_RSA_DER: &str = "MIIEowIBAAKCAQEAxhtwYBNSW3mJOXNSvqwlkgwpgV55GNOE7voes7vk8is6pjgc/2vCp4Vz45Vl3ZUOE8d8iJVB4JPPV9Pz9gfZkD/A44QryJN0OKm7zxKOwOZi9yXvG2s0/TUGxQ4n5K8XFujdwpAaTEnmnUZLgPZZZF/gFdpCp9+4H4Tx5SzA953QyWjMghAVm3hgnTT2EeCKHiUhFkDaI5cHnh0K9i3g5CjweDHjWHugPUH+vJd8zs4vLYSiasTrFW6rv+3g8k/fy9xNSvdRLus9KtbJMA7B8FBIM/39thhhYntlBsi9lQXKGfvaENBVFKInTR2/kwDvxyEKuScNeMBAw15LdZbydwIDAQABAoIBAA5jf836mUi7kxPxJFlk93WcHIeg7Pq4ojcZQ5GaXA6axS+9c525nfG856Xn+/YUFWmqW4kwDhDZq32dj2KXP14Sw1fDCcsPqqlS6qknl+a61QVOZAeByd96Mnutg4hAj1TCpRi0jrRryawyptk/C08XB5eOurimryDa7xbOIVXap6rhkFn3XDLFNmNjvbsR6BmJrXu3EZpUqFb60OJi3IpsajZa5vp9Ipj4UgyApJY70gkDDLcrjmzcUgbgA/uzOnfXH7ovWc5CTcfLV2CHxI4kUEszMbk5AdktiaLXzzHJhAYIA0g9YyZW3U1stkDL9NGDugI/Kxd2wHPaXHEMDgECgYEA964ZD/2agfxASIf12uJ2HH0EwVNJFqPn2prGgBQzI1cp9AJL4FIw3LnPiEYwQ9PLKnNkG4yvK+ESxv6U0jG13PAS9j+BWkJdBZgN45ls+5jHgOuXNlA8iaMmGQ63w8aTHVjdZuRAORe1d4I6bG6qNQlj38R/CwLpVw0Mi1b41FcCgYEAzMMLJwezobSn5bYL2I9hpxkSOnhKFggq8d91GQQyux2CZNziSG97ifYq4OfYUf7ctilJ9Ag8KyzlolMX75MJi4N/ykgtCY2t1qdgY9/SHqfx2Ba8Il+wON3qAzxmDl9nmyNt+dRTQvDE6FrqAtGcjv3RMz1OOuWbHMWoNx26/uECgYAJoxaKjr2STTRbHh8s0x7xYNPsiccQQHRnBxquJRsQRvX07pnxMoGANSKkFMcP/I+tKSw9/i1asbk/UOyNeS2wWQ8D0djAoFBqRU5VCsU4zOsGUyRhEqIoYNa8ptvznChhPfHvbPYqwodnDQQk7/FjeugN7uFallRp9LIGQe4QpQKBgQC/GvKXtNp0e9WP0T5xGjD78axPoeETewAJypLRjFeEx9/hHz6aeGIGuxf93KTKsmFwKkz5U45EhZy0yXS3hrYL3ekw8/gEyJSMmJ6f2E+ViQ1wrpdcRY6FJKi56G8fzu81nfWQjBhBi9FbQy7Q/q1tz3qmpfsTgSQp0FhVSIw0QQKBgEV1C+MJ2KBe/uo3Ln+/nTEzkuAO3B5YW6tYc64PLYe2SQA/OFz6IbXx+5uX+wRnQamdQVU3PD8SGTKj+tLi9fcH/hN/1AxuMjvEn7d2Ez1RGTbYs+ML+hLxpPqMb/sbMvKZbk9wXuywBOUe2hRkV9nSPzkAYr14QlaL5/nGANQ4";

    fn signed(
        alg: &str,
        kid: &str,
        claims: &serde_json::Value,
        sign: impl Fn(&[u8]) -> Vec<u8>,
    ) -> String {
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(json!({"alg": alg, "kid": kid, "typ": "JWT"}).to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(sign(input.as_bytes())))
    }

    fn rsa() -> (RsaKeyPair, Jwk) {
        let der = base64::engine::general_purpose::STANDARD
            .decode(TEST_RSA_DER)
            .unwrap();
        let pair = RsaKeyPair::from_der(&der).unwrap();
        let public: signature::RsaPublicKeyComponents<Vec<u8>> = pair.public().into();
        let jwk = Jwk {
            kty: "RSA".into(),
            kid: Some("rsa-1".into()),
            n: Some(URL_SAFE_NO_PAD.encode(&public.n)),
            e: Some(URL_SAFE_NO_PAD.encode(&public.e)),
            crv: None,
            x: None,
            y: None,
        };
        (pair, jwk)
    }

    fn rs256(pair: &RsaKeyPair, claims: &serde_json::Value) -> String {
        signed("RS256", "rsa-1", claims, |input| {
            let mut out = vec![0; pair.public().modulus_len()];
            pair.sign(
                &signature::RSA_PKCS1_SHA256,
                &SystemRandom::new(),
                input,
                &mut out,
            )
            .unwrap();
            out
        })
    }

    fn ec() -> (EcdsaKeyPair, Jwk) {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(
            &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            pkcs8.as_ref(),
            &rng,
        )
        .unwrap();
        let point = pair.public_key().as_ref();
        let jwk = Jwk {
            kty: "EC".into(),
            kid: Some("ec-1".into()),
            crv: Some("P-256".into()),
            x: Some(URL_SAFE_NO_PAD.encode(&point[1..33])),
            y: Some(URL_SAFE_NO_PAD.encode(&point[33..65])),
            n: None,
            e: None,
        };
        (pair, jwk)
    }

    fn claims() -> serde_json::Value {
        json!({
            "iss": "https://idp.example", "aud": "dashboard", "sub": "1",
            "exp": 2_000, "iat": 1_000, "nonce": "n-1",
            "email": "carol@firm.example", "email_verified": true,
        })
    }

    #[test]
    fn rs256_and_es256_tokens_verify_under_their_keys_and_no_other() {
        let (rsa_pair, rsa_key) = rsa();
        let (ec_pair, ec_key) = ec();
        let keys = vec![rsa_key.clone(), ec_key.clone()];

        let token = rs256(&rsa_pair, &claims());
        assert_eq!(
            verify(&token, &keys).unwrap()["email"],
            "carol@firm.example"
        );
        let token = signed("ES256", "ec-1", &claims(), |input| {
            ec_pair
                .sign(&SystemRandom::new(), input)
                .unwrap()
                .as_ref()
                .to_vec()
        });
        assert_eq!(verify(&token, &keys).unwrap()["sub"], "1");

        // Changed claims under the old signature.
        let genuine = rs256(&rsa_pair, &claims());
        let mut forged_claims = claims();
        forged_claims["email"] = json!("mallory@firm.example");
        let parts: Vec<&str> = genuine.split('.').collect();
        let forged = format!(
            "{}.{}.{}",
            parts[0],
            URL_SAFE_NO_PAD.encode(forged_claims.to_string()),
            parts[2]
        );
        assert!(matches!(
            verify(&forged, &keys),
            Err(OidcError::InvalidToken(_))
        ));
        // A key the provider does not publish.
        assert!(verify(&genuine, &[ec_key]).is_err());
        // Unsigned, or signed with a MAC.
        for alg in ["none", "HS256"] {
            let token = signed(alg, "rsa-1", &claims(), |_| b"x".to_vec());
            let refused = verify(&token, &keys).unwrap_err().to_string();
            assert!(refused.contains("only RS256 and ES256"), "{refused}");
        }
        assert!(verify("not-a-jwt", &keys).is_err());
    }

    #[test]
    fn a_flood_of_started_sign_ins_pushes_out_the_oldest_never_the_newest() {
        let base = Instant::now();
        let at = |secs: u64| base + Duration::from_secs(secs);
        let started = |n: u64| Pending {
            nonce: format!("n{n}"),
            verifier: format!("v{n}"),
            started: at(n),
        };
        let mut pending = PendingSignIns::new(3);
        for n in 0..3 {
            pending.insert(format!("s{n}"), started(n), at(n));
        }
        // Full: the next start still goes in, the oldest goes out.
        pending.insert("mine".into(), started(50), at(50));
        assert!(pending.take("s0", at(60)).is_none());
        assert_eq!(pending.take("mine", at(60)).unwrap().nonce, "n50");
        // Used once.
        assert!(pending.take("mine", at(60)).is_none());
        assert_eq!(pending.take("s2", at(60)).unwrap().verifier, "v2");
        // Too old to finish.
        pending.insert("late".into(), started(100), at(100));
        let too_late = base + Duration::from_secs(100) + PENDING_FOR;
        assert!(pending.take("late", too_late).is_none());
    }

    #[test]
    fn the_claims_must_be_for_this_client_this_sign_in_and_now() {
        let check = |c: &serde_json::Value, now| {
            check_claims(c, "https://idp.example", "dashboard", "n-1", now)
        };
        assert!(check(&claims(), 1_500).is_ok());
        assert!(check(&claims(), 2_100).is_err(), "expired");
        for (field, value) in [
            ("iss", json!("https://other.example")),
            ("aud", json!("another-client")),
            ("aud", json!(["dashboard", "another-client"])),
            ("nonce", json!("n-2")),
            ("iat", json!(9_000)),
        ] {
            let mut c = claims();
            c[field] = value.clone();
            assert!(check(&c, 1_500).is_err(), "{field} = {value}");
        }
        let mut c = claims();
        c["aud"] = json!(["dashboard", "another-client"]);
        c["azp"] = json!("dashboard");
        assert!(check(&c, 1_500).is_ok());

        assert_eq!(person_of(&claims(), "email").unwrap(), "carol@firm.example");
        let mut unverified = claims();
        unverified["email_verified"] = json!(false);
        assert!(person_of(&unverified, "email").is_err());
        assert!(person_of(&claims(), "preferred_username").is_err());
    }
}
