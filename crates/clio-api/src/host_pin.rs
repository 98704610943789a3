//! Host pinning: a connection's token is only ever sent to the API host of its region.
//!
//! The region's API base travels with the token (auth-svc leases both together, from
//! [`crate::RegionUrls::api_base_url`]); a URL on any other origin (scheme, host and port),
//! such as a `next` link Clio or something in between made up, is refused before anything
//! is sent.

use url::Url;

use crate::error::ClioError;

/// `Ok` when `url` is on `api_base`'s origin, [`ClioError::ForeignHost`] naming `url`'s
/// origin otherwise.
pub fn check_origin(url: &Url, api_base: &Url) -> Result<(), ClioError> {
    if url.origin() != api_base.origin() {
        return Err(ClioError::ForeignHost {
            origin: url.origin().ascii_serialization(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_api_base_origin_is_allowed() {
        let base = Url::parse("https://eu.app.clio.com/api/v4").unwrap();
        let same = Url::parse("https://eu.app.clio.com/api/v4/contacts.json?page_token=a").unwrap();
        check_origin(&same, &base).unwrap();
        for foreign in [
            "https://app.clio.com/api/v4/contacts.json",
            "http://eu.app.clio.com/api/v4/contacts.json",
            "https://eu.app.clio.com:8443/api/v4/contacts.json",
        ] {
            let error = check_origin(&Url::parse(foreign).unwrap(), &base).unwrap_err();
            assert!(matches!(error, ClioError::ForeignHost { .. }), "{foreign}");
        }
    }
}
