//! Clio's OAuth 2.0 authorization-code flow, on the `oauth2` crate.
//!
//! Clio wants the client credentials in the form body (not HTTP Basic), has no `scope`
//! parameter (permissions are fixed on the developer app), tolerates PKCE, and usually
//! answers a refresh without a new refresh token. The transport below classifies every
//! non-success answer itself, so `oauth2` only ever parses successful token responses and
//! no response body (which could hold a token) ends up in an error.

use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use oauth2::basic::BasicClient;
use oauth2::{
    AsyncHttpClient, AuthType, AuthUrl, AuthorizationCode, ClientId, ClientSecret, CsrfToken,
    HttpRequest, HttpResponse, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, RefreshToken,
    RequestTokenError, TokenResponse, TokenUrl,
};
use secrecy::{ExposeSecret, SecretString};

use crate::client::ClioClient;
use crate::error::{ClioError, classify_oauth_code, truncate};
use crate::observer::{Endpoint, Observer};
use crate::region::Region;

/// A Clio developer app's credentials in one region.
#[derive(Clone)]
pub struct AppCredentials {
    pub client_id: String,
    pub client_secret: SecretString,
}

impl fmt::Debug for AppCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AppCredentials")
            .field("client_id", &self.client_id)
            .field("client_secret", &"[REDACTED]")
            .finish()
    }
}

/// A PKCE verifier and its S256 challenge.
pub struct Pkce {
    verifier: SecretString,
}

impl Pkce {
    /// A fresh random verifier (32 random bytes, base64url).
    pub fn generate() -> Pkce {
        let (_, verifier) = PkceCodeChallenge::new_random_sha256();
        Pkce {
            verifier: SecretString::from(verifier.secret().to_owned()),
        }
    }

    /// The verifier kept since authorize.
    pub fn from_verifier(verifier: SecretString) -> Pkce {
        Pkce { verifier }
    }

    pub fn verifier(&self) -> &SecretString {
        &self.verifier
    }

    /// The S256 challenge sent at authorize.
    pub fn challenge(&self) -> String {
        let verifier = PkceCodeVerifier::new(self.verifier.expose_secret().to_owned());
        PkceCodeChallenge::from_code_verifier_sha256(&verifier)
            .as_str()
            .to_owned()
    }
}

impl fmt::Debug for Pkce {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Pkce([REDACTED])")
    }
}

/// What goes into the authorize URL.
#[derive(Debug, Clone, Copy)]
pub struct AuthorizeRequest<'a> {
    pub region: Region,
    pub client_id: &'a str,
    /// Used again, byte for byte, at the code exchange.
    pub redirect_uri: &'a str,
    pub state: &'a str,
    pub pkce: Option<&'a Pkce>,
}

/// Tokens from a code exchange or a refresh.
pub struct TokenGrant {
    pub access_token: SecretString,
    /// `None` when Clio did not send one (the usual answer to a refresh): keep the old one.
    pub refresh_token: Option<SecretString>,
    /// Clio's `expires_in`: 30 days, 7 days or 1 hour depending on the account.
    pub expires_in: Option<Duration>,
}

impl fmt::Debug for TokenGrant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenGrant")
            .field("access_token", &"[REDACTED]")
            .field(
                "refresh_token",
                &self.refresh_token.as_ref().map(|_| "[REDACTED]"),
            )
            .field("expires_in", &self.expires_in)
            .finish()
    }
}

impl ClioClient {
    /// The URL to send the person to. Asks Clio to redirect back on decline too, so a
    /// denial reaches the callback as `error=access_denied`.
    pub fn authorize_url(&self, request: &AuthorizeRequest<'_>) -> Result<String, ClioError> {
        let auth_url = AuthUrl::new(self.regions().authorize_url(request.region))
            .map_err(|e| config_error("authorize URL", &e))?;
        let redirect = RedirectUrl::new(request.redirect_uri.to_owned())
            .map_err(|e| config_error("redirect URI", &e))?;
        let client =
            BasicClient::new(ClientId::new(request.client_id.to_owned())).set_auth_uri(auth_url);
        let state = request.state.to_owned();
        let mut authorize = client
            .authorize_url(move || CsrfToken::new(state))
            .set_redirect_uri(Cow::Owned(redirect))
            .add_extra_param("redirect_on_decline", "true");
        if let Some(pkce) = request.pkce {
            let verifier = PkceCodeVerifier::new(pkce.verifier.expose_secret().to_owned());
            authorize = authorize
                .set_pkce_challenge(PkceCodeChallenge::from_code_verifier_sha256(&verifier));
        }
        let (url, _) = authorize.url();
        Ok(url.to_string())
    }

    /// Exchanges an authorization code. `redirect_uri` must be the one used at authorize.
    #[tracing::instrument(skip_all, fields(region = %region, client_id = %credentials.client_id))]
    pub async fn exchange_code(
        &self,
        region: Region,
        credentials: &AppCredentials,
        code: &SecretString,
        redirect_uri: &str,
        pkce_verifier: Option<&SecretString>,
    ) -> Result<TokenGrant, ClioError> {
        let client = self.token_client(region, credentials)?;
        let redirect = RedirectUrl::new(redirect_uri.to_owned())
            .map_err(|e| config_error("redirect URI", &e))?;
        let mut exchange = client
            .exchange_code(AuthorizationCode::new(code.expose_secret().to_owned()))
            .set_redirect_uri(Cow::Owned(redirect));
        if let Some(verifier) = pkce_verifier {
            exchange = exchange
                .set_pkce_verifier(PkceCodeVerifier::new(verifier.expose_secret().to_owned()));
        }
        let transport = self.transport();
        let response = exchange
            .request_async(&transport)
            .await
            .map_err(from_oauth)?;
        Ok(grant_of(&response))
    }

    /// Gets a new access token with a refresh token.
    #[tracing::instrument(skip_all, fields(region = %region, client_id = %credentials.client_id))]
    pub async fn refresh(
        &self,
        region: Region,
        credentials: &AppCredentials,
        refresh_token: &SecretString,
    ) -> Result<TokenGrant, ClioError> {
        let client = self.token_client(region, credentials)?;
        let token = RefreshToken::new(refresh_token.expose_secret().to_owned());
        let transport = self.transport();
        let response = client
            .exchange_refresh_token(&token)
            .request_async(&transport)
            .await
            .map_err(from_oauth)?;
        Ok(grant_of(&response))
    }

    /// Revokes the grant behind `access_token` at Clio (`POST /oauth/deauthorize`).
    /// Afterwards the access and refresh tokens are refused.
    #[tracing::instrument(skip_all, fields(region = %region))]
    pub async fn deauthorize(
        &self,
        region: Region,
        access_token: &SecretString,
    ) -> Result<(), ClioError> {
        let request = self
            .http()
            .post(self.regions().deauthorize_url(region))
            .bearer_auth(access_token.expose_secret())
            .form(&[("token", access_token.expose_secret())]);
        self.send(Endpoint::Deauthorize, request).await.map(drop)
    }

    /// What `oauth2` sends the token requests with.
    fn transport(&self) -> Transport {
        Transport {
            http: self.http().clone(),
            observer: self.observer().clone(),
        }
    }

    fn token_client(
        &self,
        region: Region,
        credentials: &AppCredentials,
    ) -> Result<
        BasicClient<
            oauth2::EndpointNotSet,
            oauth2::EndpointNotSet,
            oauth2::EndpointNotSet,
            oauth2::EndpointNotSet,
            oauth2::EndpointSet,
        >,
        ClioError,
    > {
        let token_url = TokenUrl::new(self.regions().token_url(region))
            .map_err(|e| config_error("token URL", &e))?;
        Ok(
            BasicClient::new(ClientId::new(credentials.client_id.clone()))
                .set_client_secret(ClientSecret::new(
                    credentials.client_secret.expose_secret().to_owned(),
                ))
                // Clio reads the client credentials from the form body.
                .set_auth_type(AuthType::RequestBody)
                .set_token_uri(token_url),
        )
    }
}

fn grant_of(response: &oauth2::basic::BasicTokenResponse) -> TokenGrant {
    TokenGrant {
        access_token: SecretString::from(response.access_token().secret().to_owned()),
        refresh_token: response
            .refresh_token()
            .map(|t| SecretString::from(t.secret().to_owned())),
        expires_in: response.expires_in(),
    }
}

fn config_error(what: &str, error: &dyn std::error::Error) -> ClioError {
    ClioError::Other {
        status: None,
        detail: format!("invalid {what}: {error}"),
    }
}

/// A failure the transport already classified.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
struct Classified(ClioError);

fn from_oauth(
    error: RequestTokenError<Classified, oauth2::basic::BasicErrorResponse>,
) -> ClioError {
    match error {
        RequestTokenError::Request(Classified(error)) => error,
        RequestTokenError::ServerResponse(response) => classify_oauth_code(
            response.error().as_ref(),
            truncate(response.error_description().map_or("", String::as_str)),
            None,
        ),
        // The body of a successful answer may hold a token: never keep it.
        RequestTokenError::Parse(_, _) => ClioError::Other {
            status: Some(200),
            detail: "malformed token response".into(),
        },
        RequestTokenError::Other(message) => ClioError::Other {
            status: None,
            detail: truncate(&message),
        },
    }
}

/// Sends `oauth2`'s requests with the shared reqwest client and turns every non-200 answer
/// into a classified error, keeping the status (which `oauth2` would drop) and never the
/// body. Every call is reported to the client's observer.
struct Transport {
    http: reqwest::Client,
    observer: Observer,
}

impl<'c> AsyncHttpClient<'c> for Transport {
    type Error = Classified;
    type Future = Pin<Box<dyn Future<Output = Result<HttpResponse, Classified>> + Send + 'c>>;

    fn call(&'c self, request: HttpRequest) -> Self::Future {
        Box::pin(async move {
            let request = reqwest::Request::try_from(request).map_err(|e| {
                Classified(ClioError::Other {
                    status: None,
                    detail: format!("cannot build the token request: {e}"),
                })
            })?;
            let started = Instant::now();
            let sent = self.http.execute(request).await;
            let status = sent.as_ref().ok().map(|r| r.status().as_u16());
            self.observer
                .called(Endpoint::Token, status, started.elapsed());
            let response = sent.map_err(|e| Classified(ClioError::from_transport(&e)))?;
            let status = response.status();
            let headers = response.headers().clone();
            let body = response
                .bytes()
                .await
                .map_err(|e| Classified(ClioError::from_transport(&e)))?;
            if status != reqwest::StatusCode::OK {
                return Err(Classified(ClioError::from_response(
                    status, &headers, &body,
                )));
            }
            let mut builder = http::Response::builder().status(status);
            for (name, value) in &headers {
                builder = builder.header(name, value);
            }
            builder.body(body.to_vec()).map_err(|e| {
                Classified(ClioError::Other {
                    status: Some(200),
                    detail: format!("cannot read the token response: {e}"),
                })
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use axum::Router;
    use axum::http::StatusCode;
    use axum::routing::post;

    use super::*;
    use crate::client::HttpSettings;
    use crate::error::ClioErrorKind;
    use crate::region::RegionUrls;

    /// A token endpoint answering `status` and `body`, recording the form it received.
    async fn token_server(status: u16, body: &'static str) -> (ClioClient, Arc<Mutex<String>>) {
        let seen = Arc::new(Mutex::new(String::new()));
        let record = seen.clone();
        let app = Router::new().route(
            "/oauth/token",
            post(move |form: String| {
                *record.lock().unwrap() = form;
                async move {
                    (
                        StatusCode::from_u16(status).unwrap(),
                        [("content-type", "application/json")],
                        body,
                    )
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        let client = ClioClient::new(RegionUrls::uniform(&base), HttpSettings::default()).unwrap();
        (client, seen)
    }

    fn credentials() -> AppCredentials {
        AppCredentials {
            client_id: "app-1".into(),
            client_secret: SecretString::from("s3cret-value"),
        }
    }

    #[tokio::test]
    async fn code_exchange_sends_credentials_in_the_body() {
        let (client, seen) = token_server(
            200,
            r#"{"token_type":"bearer","access_token":"at-1","expires_in":3600,"refresh_token":"rt-1"}"#,
        )
        .await;
        let grant = client
            .exchange_code(
                Region::Us,
                &credentials(),
                &SecretString::from("the-code"),
                "https://auth.example/oauth/callback",
                Some(&SecretString::from("v".repeat(43))),
            )
            .await
            .unwrap();
        assert_eq!(grant.access_token.expose_secret(), "at-1");
        assert_eq!(grant.refresh_token.unwrap().expose_secret(), "rt-1");
        assert_eq!(grant.expires_in, Some(Duration::from_secs(3600)));
        let form = seen.lock().unwrap().clone();
        for part in [
            "grant_type=authorization_code",
            "code=the-code",
            "client_id=app-1",
            "client_secret=s3cret-value",
            "redirect_uri=https%3A%2F%2Fauth.example%2Foauth%2Fcallback",
            "code_verifier=",
        ] {
            assert!(form.contains(part), "{part} missing from {form}");
        }
    }

    #[tokio::test]
    async fn a_refresh_without_a_new_refresh_token_says_so() {
        let (client, seen) = token_server(
            200,
            r#"{"token_type":"bearer","access_token":"at-2","expires_in":2592000}"#,
        )
        .await;
        let grant = client
            .refresh(Region::Us, &credentials(), &SecretString::from("rt-1"))
            .await
            .unwrap();
        assert!(grant.refresh_token.is_none());
        assert_eq!(grant.expires_in, Some(Duration::from_secs(2_592_000)));
        assert!(seen.lock().unwrap().contains("grant_type=refresh_token"));
    }

    #[tokio::test]
    async fn failures_are_classified_without_bodies() {
        let (client, _) = token_server(
            400,
            r#"{"error":"invalid_grant","error_description":"revoked"}"#,
        )
        .await;
        let error = client
            .refresh(Region::Us, &credentials(), &SecretString::from("rt-1"))
            .await
            .unwrap_err();
        assert_eq!(error.kind(), ClioErrorKind::InvalidGrant);

        let (client, _) = token_server(503, "unavailable").await;
        let error = client
            .refresh(Region::Us, &credentials(), &SecretString::from("rt-1"))
            .await
            .unwrap_err();
        assert_eq!(error.kind(), ClioErrorKind::Transient);

        // A 200 that is not a token response: the body (which may hold a token) is dropped.
        let (client, _) = token_server(200, r#"{"access_token":"leaky-token"}"#).await;
        let error = client
            .refresh(Region::Us, &credentials(), &SecretString::from("rt-1"))
            .await
            .unwrap_err();
        assert!(!error.to_string().contains("leaky-token"), "{error}");
        assert!(!format!("{error:?}").contains("leaky-token"));
    }

    #[tokio::test]
    async fn an_unreachable_host_is_transient() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        drop(listener);
        let client = ClioClient::new(RegionUrls::uniform(&base), HttpSettings::default()).unwrap();
        let error = client
            .deauthorize(Region::Eu, &SecretString::from("at"))
            .await
            .unwrap_err();
        assert_eq!(error.kind(), ClioErrorKind::Transient, "{error}");
    }

    #[test]
    fn the_authorize_url_carries_state_redirect_and_pkce() {
        let client = ClioClient::new(RegionUrls::default(), HttpSettings::default()).unwrap();
        let pkce = Pkce::generate();
        let url = client
            .authorize_url(&AuthorizeRequest {
                region: Region::Eu,
                client_id: "app-1",
                redirect_uri: "https://eu.app.clio.com/oauth/approval",
                state: "st4te",
                pkce: Some(&pkce),
            })
            .unwrap();
        assert!(
            url.starts_with("https://eu.app.clio.com/oauth/authorize?"),
            "{url}"
        );
        let parsed = url::Url::parse(&url).unwrap();
        let params: std::collections::HashMap<_, _> = parsed.query_pairs().into_owned().collect();
        assert_eq!(params["response_type"], "code");
        assert_eq!(params["client_id"], "app-1");
        assert_eq!(params["state"], "st4te");
        assert_eq!(
            params["redirect_uri"],
            "https://eu.app.clio.com/oauth/approval"
        );
        assert_eq!(params["code_challenge"], pkce.challenge());
        assert_eq!(params["code_challenge_method"], "S256");
        assert!(!params.contains_key("scope"));
    }

    #[test]
    fn debug_output_redacts_secrets() {
        let grant = TokenGrant {
            access_token: SecretString::from("at-secret"),
            refresh_token: Some(SecretString::from("rt-secret")),
            expires_in: None,
        };
        let text = format!("{grant:?} {:?} {:?}", credentials(), Pkce::generate());
        assert!(
            !text.contains("secret-") && !text.contains("at-secret"),
            "{text}"
        );
        assert!(!text.contains("s3cret"), "{text}");
    }
}
