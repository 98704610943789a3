//! Clio's regions and the base URL of each.
//!
//! Regions are separate silos: an app, its connections and their tokens belong to one,
//! and a token sent to another region's host is refused. Base URLs come from
//! configuration (`[clio.regions] us = "https://app.clio.com"`), so tests and staging
//! point them elsewhere; every URL this crate builds starts from one of them.
//!
//! This is Clio's notion of a region, not a wire type: each service converts its gRPC
//! enum to and from it in one place of its own.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use url::Url;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Region {
    Us,
    Eu,
    Ca,
    Au,
}

impl Region {
    pub const ALL: [Region; 4] = [Region::Us, Region::Eu, Region::Ca, Region::Au];

    pub fn as_str(self) -> &'static str {
        match self {
            Region::Us => "us",
            Region::Eu => "eu",
            Region::Ca => "ca",
            Region::Au => "au",
        }
    }

    /// Clio's production host for this region.
    pub fn production_base_url(self) -> &'static str {
        match self {
            Region::Us => "https://app.clio.com",
            Region::Eu => "https://eu.app.clio.com",
            Region::Ca => "https://ca.app.clio.com",
            Region::Au => "https://au.app.clio.com",
        }
    }
}

impl fmt::Display for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown region {0:?}: expected us, eu, ca or au")]
pub struct UnknownRegion(pub String);

impl FromStr for Region {
    type Err = UnknownRegion;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Region::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| UnknownRegion(s.to_owned()))
    }
}

/// The base URL (scheme, host, optional path prefix) of each region. OAuth lives under
/// `{base}/oauth/...`, the API under `{base}/api/v4/...`.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RegionUrls {
    pub us: String,
    pub eu: String,
    pub ca: String,
    pub au: String,
}

impl Default for RegionUrls {
    fn default() -> Self {
        RegionUrls {
            us: Region::Us.production_base_url().into(),
            eu: Region::Eu.production_base_url().into(),
            ca: Region::Ca.production_base_url().into(),
            au: Region::Au.production_base_url().into(),
        }
    }
}

impl fmt::Debug for RegionUrls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(Region::ALL.map(|r| (r.as_str(), self.base_url(r))))
            .finish()
    }
}

impl RegionUrls {
    /// The same base URL for every region (a single simulator, or a test).
    pub fn uniform(base: &str) -> Self {
        RegionUrls {
            us: base.into(),
            eu: base.into(),
            ca: base.into(),
            au: base.into(),
        }
    }

    pub fn set(&mut self, region: Region, base: impl Into<String>) {
        let slot = match region {
            Region::Us => &mut self.us,
            Region::Eu => &mut self.eu,
            Region::Ca => &mut self.ca,
            Region::Au => &mut self.au,
        };
        *slot = base.into();
    }

    /// The region's base URL without a trailing slash.
    pub fn base_url(&self, region: Region) -> &str {
        let raw = match region {
            Region::Us => &self.us,
            Region::Eu => &self.eu,
            Region::Ca => &self.ca,
            Region::Au => &self.au,
        };
        raw.trim_end_matches('/')
    }

    /// `{base}/api/v4`: the only place a token of this region may be sent for data.
    pub fn api_base_url(&self, region: Region) -> String {
        format!("{}/api/v4", self.base_url(region))
    }

    pub fn authorize_url(&self, region: Region) -> String {
        format!("{}/oauth/authorize", self.base_url(region))
    }

    pub fn token_url(&self, region: Region) -> String {
        format!("{}/oauth/token", self.base_url(region))
    }

    pub fn deauthorize_url(&self, region: Region) -> String {
        format!("{}/oauth/deauthorize", self.base_url(region))
    }

    /// The out-of-band redirect URI: Clio shows the code on this page instead of
    /// redirecting to the application.
    pub fn approval_redirect_uri(&self, region: Region) -> String {
        format!("{}/oauth/approval", self.base_url(region))
    }

    /// Checks every base URL is an absolute http(s) URL without query or fragment.
    /// The error is `(region name, problem)` for the caller to place under its own key.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        for region in Region::ALL {
            let raw = self.base_url(region);
            let url = Url::parse(raw).map_err(|e| (region.as_str(), format!("not a URL ({e})")))?;
            if !matches!(url.scheme(), "http" | "https") {
                return Err((
                    region.as_str(),
                    format!("scheme must be http or https, not {:?}", url.scheme()),
                ));
            }
            if url.host_str().is_none() {
                return Err((region.as_str(), "must name a host".into()));
            }
            if url.query().is_some() || url.fragment().is_some() {
                return Err((region.as_str(), "must not carry a query or fragment".into()));
            }
            if !url.username().is_empty() || url.password().is_some() {
                return Err((region.as_str(), "must not carry credentials".into()));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_built_from_the_region_base() {
        let mut urls = RegionUrls::default();
        urls.set(Region::Eu, "http://127.0.0.1:9000/eu/");
        assert_eq!(
            urls.token_url(Region::Eu),
            "http://127.0.0.1:9000/eu/oauth/token"
        );
        assert_eq!(urls.api_base_url(Region::Us), "https://app.clio.com/api/v4");
        assert_eq!(
            urls.approval_redirect_uri(Region::Au),
            "https://au.app.clio.com/oauth/approval"
        );
        urls.validate().unwrap();
    }

    #[test]
    fn bad_base_urls_name_the_region() {
        let mut urls = RegionUrls::default();
        urls.set(Region::Ca, "ftp://x");
        assert_eq!(urls.validate().unwrap_err().0, "ca");
        urls.set(Region::Ca, "https://x/?a=b");
        assert_eq!(urls.validate().unwrap_err().0, "ca");
    }

    #[test]
    fn regions_round_trip() {
        for region in Region::ALL {
            assert_eq!(region.as_str().parse(), Ok(region));
        }
        assert!("mars".parse::<Region>().is_err());
    }
}
