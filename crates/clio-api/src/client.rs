//! The HTTP client every Clio call goes through, and the region hosts it may talk to.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::ClioError;
use crate::observer::{CallObserver, Endpoint, Observer};
use crate::region::{Region, RegionUrls};

/// Timeouts for calls to Clio.
#[derive(Debug, Clone, Copy)]
pub struct HttpSettings {
    pub connect_timeout: Duration,
    /// The whole request, answer included.
    pub request_timeout: Duration,
}

impl Default for HttpSettings {
    fn default() -> Self {
        HttpSettings {
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
        }
    }
}

/// A client for Clio's OAuth server and API in every configured region. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ClioClient {
    http: reqwest::Client,
    regions: RegionUrls,
    observer: Observer,
}

/// The one way this crate builds an HTTP client: `settings`' timeouts, our user agent,
/// and no redirects. A redirect from Clio is never followed: OAuth endpoints must answer
/// directly, Clio does not redirect API calls, and following one would carry a token (same
/// origin) or a request (any origin) somewhere no region or host check ever saw.
pub(crate) fn http_client(settings: HttpSettings) -> Result<reqwest::Client, ClioError> {
    reqwest::Client::builder()
        .connect_timeout(settings.connect_timeout)
        .timeout(settings.request_timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("clio-connect/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| ClioError::from_transport(&e))
}

impl ClioClient {
    pub fn new(regions: RegionUrls, settings: HttpSettings) -> Result<Self, ClioError> {
        let http = http_client(settings)?;
        Ok(ClioClient {
            http,
            regions,
            observer: Observer::default(),
        })
    }

    /// Reports every call this client makes to `observer`.
    pub fn with_observer(mut self, observer: Arc<dyn CallObserver>) -> Self {
        self.observer = Observer::new(observer);
        self
    }

    pub(crate) fn observer(&self) -> &Observer {
        &self.observer
    }

    pub fn regions(&self) -> &RegionUrls {
        &self.regions
    }

    /// The underlying HTTP client (connection pool, timeouts), for API modules.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// `{base}/api/v4` of `region`.
    pub fn api_base_url(&self, region: Region) -> String {
        self.regions.api_base_url(region)
    }

    /// Sends `request` and returns the answer if its status is a success, the classified
    /// failure otherwise.
    pub(crate) async fn send(
        &self,
        endpoint: Endpoint<'_>,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, ClioError> {
        let started = Instant::now();
        let sent = request.send().await;
        let status = sent.as_ref().ok().map(|r| r.status().as_u16());
        self.observer.called(endpoint, status, started.elapsed());
        let response = sent.map_err(|e| ClioError::from_transport(&e))?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let headers = response.headers().clone();
        let body = response
            .bytes()
            .await
            .map_err(|e| ClioError::from_transport(&e))?;
        Err(ClioError::from_response(status, &headers, &body))
    }
}
