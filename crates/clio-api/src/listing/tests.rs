//! Page reads against a local server answering what each test scripts.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::http::Response;
use axum::routing::get;

use super::*;

/// Counts waits instead of keeping them.
#[derive(Default)]
struct Waits(AtomicUsize);

impl WaitObserver for Waits {
    fn waited(&self, _wait: Duration) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

const PAGE: &str = r#"{"data":[{"id":1}],"meta":{"paging":{}}}"#;

/// A server answering `/api/v4/contacts.json` with `answers` in turn (then a page), and
/// the number of requests it received.
async fn server(answers: Vec<Response<Body>>) -> (Url, Arc<AtomicUsize>) {
    let answers = Arc::new(Mutex::new(VecDeque::from(answers)));
    let seen = Arc::new(AtomicUsize::new(0));
    let count = seen.clone();
    let app = Router::new().route(
        "/api/v4/contacts.json",
        get(move || {
            count.fetch_add(1, Ordering::SeqCst);
            let next = answers.lock().unwrap().pop_front();
            async move { next.unwrap_or_else(|| answer(200, &[], PAGE)) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = Url::parse(&format!("http://{}/api/v4", listener.local_addr().unwrap())).unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (base, seen)
}

fn answer(status: u16, headers: &[(&str, &str)], body: &str) -> Response<Body> {
    let mut builder = Response::builder().status(status);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(Body::from(body.to_owned())).unwrap()
}

fn lister() -> Lister {
    Lister::new(
        HttpSettings::default(),
        ListingSettings {
            rate_limit_reserve: 0,
            max_page_attempts: 3,
            backoff_base: Duration::from_millis(1),
            max_page_bytes: 1024,
            max_record_bytes: 512,
        },
    )
    .unwrap()
}

fn contacts(base: &Url) -> Url {
    let filters = BTreeMap::new();
    ListQuery {
        resource: "contacts",
        fields: "id",
        limit: 10,
        updated_since: None,
        filters: &filters,
    }
    .first_page_url(base)
    .unwrap()
}

async fn read(lister: &Lister, url: &Url, base: &Url) -> Result<Page, ClioError> {
    let gate = RateGate::default();
    let cancel = CancellationToken::new();
    let waits = Waits::default();
    lister
        .page(&PageRequest {
            url,
            api_base: base,
            token: &SecretString::from("at"),
            gate: &gate,
            budget: None,
            cancel: &cancel,
            observer: &waits,
        })
        .await
}

#[test]
fn the_first_page_carries_fields_limit_since_and_filters() {
    let filters = BTreeMap::from([("status".to_owned(), "open".to_owned())]);
    let query = ListQuery {
        resource: "matters",
        fields: "id,etag",
        limit: 200,
        updated_since: DateTime::from_timestamp(1_700_000_000, 5),
        filters: &filters,
    };
    let expected = "https://eu.app.clio.com/api/v4/matters.json?fields=id%2Cetag&limit=200&updated_since=2023-11-14T22%3A13%3A20Z&status=open";
    for base in ["https://eu.app.clio.com", "https://eu.app.clio.com/api/v4/"] {
        let url = query.first_page_url(&Url::parse(base).unwrap()).unwrap();
        assert_eq!(url.as_str(), expected);
    }
}

#[tokio::test]
async fn a_page_keeps_clio_date() {
    let (base, _) = server(vec![answer(
        200,
        &[("date", "Sun, 06 Nov 1994 08:49:37 GMT")],
        PAGE,
    )])
    .await;
    let page = read(&lister(), &contacts(&base), &base).await.unwrap();
    assert_eq!(page.records.len(), 1);
    assert_eq!(
        page.server_date,
        DateTime::from_timestamp(784_111_777, 0),
        "{page:?}"
    );
}

#[tokio::test]
async fn a_foreign_host_is_refused_before_anything_is_sent() {
    let (base, seen) = server(vec![]).await;
    let elsewhere = Url::parse("http://localhost:1/api/v4/contacts.json").unwrap();
    let error = read(&lister(), &elsewhere, &base).await.unwrap_err();
    assert!(matches!(error, ClioError::ForeignHost { .. }), "{error}");
    assert_eq!(seen.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_redirect_is_not_followed() {
    let (base, seen) = server(vec![answer(302, &[("location", "/elsewhere")], "")]).await;
    let error = read(&lister(), &contacts(&base), &base).await.unwrap_err();
    assert_eq!(
        error.to_string(),
        r#"Clio refused the request (302): redirect to "/elsewhere" not followed"#
    );
    assert_eq!(seen.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn refusals_are_classified() {
    let (base, _) = server(vec![
        answer(401, &[], r#"{"error":"invalid_client"}"#),
        answer(
            403,
            &[],
            r#"{"error":{"type":"Forbidden","message":"no\u0000"}}"#,
        ),
        answer(404, &[], "gone"),
    ])
    .await;
    let lister = lister();
    let url = contacts(&base);
    let error = read(&lister, &url, &base).await.unwrap_err();
    assert!(matches!(error, ClioError::InvalidToken { .. }), "{error}");
    let error = read(&lister, &url, &base).await.unwrap_err();
    assert_eq!(error.to_string(), r"Clio refused access (403): no\0");
    let error = read(&lister, &url, &base).await.unwrap_err();
    assert_eq!(
        error.to_string(),
        "Clio refused the request (404): 404 Not Found"
    );
}

#[tokio::test]
async fn server_errors_are_retried_then_exhausted() {
    let (base, seen) = server(vec![answer(503, &[], ""), answer(500, &[], "")]).await;
    let page = read(&lister(), &contacts(&base), &base).await.unwrap();
    assert_eq!(page.records.len(), 1);
    assert_eq!(seen.load(Ordering::SeqCst), 3);

    let (base, seen) = server((0..5).map(|_| answer(502, &[], "")).collect()).await;
    let error = read(&lister(), &contacts(&base), &base).await.unwrap_err();
    assert_eq!(
        error.to_string(),
        "Clio kept failing after 3 attempts; last error: HTTP 502"
    );
    assert!(error.is_retryable());
    assert_eq!(seen.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn a_429_is_waited_out_without_spending_an_attempt() {
    let (base, seen) = server(
        (0..4)
            .map(|_| answer(429, &[("retry-after", "0")], ""))
            .collect(),
    )
    .await;
    let page = read(&lister(), &contacts(&base), &base).await.unwrap();
    assert_eq!(page.records.len(), 1);
    assert_eq!(seen.load(Ordering::SeqCst), 5);
}

#[tokio::test]
async fn an_oversized_page_is_not_read() {
    let big = format!(r#"{{"data":[{{"id":1,"x":"{}"}}]}}"#, "x".repeat(2_000));
    let (base, _) = server(vec![answer(200, &[], &big)]).await;
    let error = read(&lister(), &contacts(&base), &base).await.unwrap_err();
    assert_eq!(
        error.to_string(),
        "Clio's answer is larger than importer.max_page_bytes (1024 bytes); not read further"
    );
}

#[tokio::test]
async fn a_cancelled_read_stops() {
    let (base, seen) = server(vec![]).await;
    let gate = RateGate::default();
    let cancel = CancellationToken::new();
    cancel.cancel();
    let error = lister()
        .page(&PageRequest {
            url: &contacts(&base),
            api_base: &base,
            token: &SecretString::from("at"),
            gate: &gate,
            budget: None,
            cancel: &cancel,
            observer: &Waits::default(),
        })
        .await
        .unwrap_err();
    assert_eq!(error, ClioError::Cancelled);
    assert_eq!(seen.load(Ordering::SeqCst), 0);
}

/// What an observer was told.
#[derive(Default)]
struct Seen {
    calls: Mutex<Vec<(String, Option<u16>)>>,
    rate_limit_waits: AtomicUsize,
}

impl crate::CallObserver for Seen {
    fn called(&self, call: &crate::Call<'_>) {
        let endpoint = match call.endpoint {
            crate::Endpoint::List(resource) => format!("list:{resource}"),
            other => other.name().to_owned(),
        };
        self.calls.lock().unwrap().push((endpoint, call.status));
    }

    fn rate_limit_waited(&self, _waited: Duration) {
        self.rate_limit_waits.fetch_add(1, Ordering::Relaxed);
    }
}

#[tokio::test]
async fn the_observer_sees_every_request_and_rate_limit_wait() {
    let (base, _) = server(vec![
        answer(503, &[], ""),
        answer(429, &[("retry-after", "1")], ""),
    ])
    .await;
    let seen = Arc::new(Seen::default());
    let lister = lister().with_observer(seen.clone());
    read(&lister, &contacts(&base), &base).await.unwrap();
    let calls = seen.calls.lock().unwrap().clone();
    let contacts = |status| ("list:contacts".to_owned(), Some(status));
    assert_eq!(calls, vec![contacts(503), contacts(429), contacts(200)]);
    // Only the request after the 429 waited; the retry after the 503 backed off, which is
    // not the rate limit.
    assert_eq!(seen.rate_limit_waits.load(Ordering::Relaxed), 1);
}
