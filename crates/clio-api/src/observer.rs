//! A hook for watching the calls this crate makes to Clio: each HTTP exchange (endpoint,
//! status, time) and each wait for a token's rate-limit window. A service implements
//! [`CallObserver`] to count them in whatever it reports with; this crate depends on no
//! metrics library.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// Which of Clio's endpoints a call went to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint<'a> {
    /// `POST /oauth/token`: a code exchange or a refresh.
    Token,
    /// `POST /oauth/deauthorize`.
    Deauthorize,
    /// `GET /api/v4/users/who_am_i.json`.
    WhoAmI,
    /// A list page of this resource (`contacts` for `/api/v4/contacts.json`), read from
    /// the page's URL. Later pages follow Clio's `next` links, so the name is Clio's: map
    /// it onto a fixed set before using it as a metric label.
    List(&'a str),
}

impl Endpoint<'_> {
    /// A fixed name for the endpoint; every list page is `list` (the resource is in
    /// [`Endpoint::List`]).
    pub fn name(&self) -> &'static str {
        match self {
            Endpoint::Token => "oauth_token",
            Endpoint::Deauthorize => "oauth_deauthorize",
            Endpoint::WhoAmI => "who_am_i",
            Endpoint::List(_) => "list",
        }
    }
}

/// One HTTP exchange with Clio.
#[derive(Debug, Clone, Copy)]
pub struct Call<'a> {
    pub endpoint: Endpoint<'a>,
    /// The answer's HTTP status; `None` when none came (a timeout, a refused or dropped
    /// connection).
    pub status: Option<u16>,
    /// From sending the request to its answer (a list page's body is read after).
    pub elapsed: Duration,
}

/// Told about every call and rate-limit wait of a client it is given to
/// ([`crate::ClioClient::with_observer`], [`crate::Lister::with_observer`]). Called on
/// the request's task: keep it cheap and never block.
pub trait CallObserver: Send + Sync {
    fn called(&self, call: &Call<'_>);

    /// A request waited `waited` for its token's rate-limit window (spent, or closed by a
    /// 429's `Retry-After`) before it was sent.
    fn rate_limit_waited(&self, waited: Duration) {
        let _ = waited;
    }
}

/// The observer a client holds, if it was given one.
#[derive(Clone, Default)]
pub(crate) struct Observer(Option<Arc<dyn CallObserver>>);

impl Observer {
    pub(crate) fn new(observer: Arc<dyn CallObserver>) -> Self {
        Observer(Some(observer))
    }

    pub(crate) fn called(&self, endpoint: Endpoint<'_>, status: Option<u16>, elapsed: Duration) {
        if let Some(observer) = &self.0 {
            observer.called(&Call {
                endpoint,
                status,
                elapsed,
            });
        }
    }

    pub(crate) fn rate_limit_waited(&self, waited: Duration) {
        if let Some(observer) = &self.0 {
            observer.rate_limit_waited(waited);
        }
    }
}

impl fmt::Debug for Observer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.0 {
            Some(_) => "Observer(set)",
            None => "Observer(none)",
        })
    }
}
