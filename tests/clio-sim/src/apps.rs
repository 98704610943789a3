//! Developer apps registered with a region: credentials, redirect URIs and the permissions
//! Clio shows the user (there is no `scope` parameter; permissions live on the app).

use serde::{Deserialize, Serialize};
use url::Url;

/// A Clio developer app as registered in one region.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppSpec {
    pub client_id: String,
    pub client_secret: String,
    /// Registered redirect URIs. A request may add query parameters to one of them.
    pub redirect_uris: Vec<String>,
    /// Permissions in scope-catalogue names (`contacts:read`, `activities:write`);
    /// `write` implies `read`.
    pub permissions: Vec<String>,
}

impl std::fmt::Debug for AppSpec {
    /// The secret never appears in debug output.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppSpec")
            .field("client_id", &self.client_id)
            .field("client_secret", &"<redacted>")
            .field("redirect_uris", &self.redirect_uris)
            .field("permissions", &self.permissions)
            .finish()
    }
}

/// Read or write access to a resource family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Access {
    Read,
    Write,
}

impl AppSpec {
    /// Whether the app's declared permissions cover `access` to a permission family
    /// (`Resource::family`, `webhooks`, or a family no served resource has, such as
    /// `documents`).
    pub(crate) fn allows_family(&self, family: &str, access: Access) -> bool {
        self.permissions.iter().any(|permission| {
            let Some((granted_family, granted_access)) = permission.split_once(':') else {
                return false;
            };
            granted_family == family
                && match access {
                    Access::Read => granted_access == "read" || granted_access == "write",
                    Access::Write => granted_access == "write",
                }
        })
    }

    /// Whether `requested` is one of the registered redirect URIs, possibly with extra
    /// query parameters (Clio accepts those).
    pub(crate) fn accepts_redirect(&self, requested: &str) -> bool {
        let Ok(requested) = Url::parse(requested) else {
            return false;
        };
        self.redirect_uris.iter().any(|registered| {
            let Ok(registered) = Url::parse(registered) else {
                return false;
            };
            let same_target = registered.scheme() == requested.scheme()
                && registered.host_str() == requested.host_str()
                && registered.port_or_known_default() == requested.port_or_known_default()
                && registered.path() == requested.path();
            let requested_pairs: Vec<_> = requested.query_pairs().collect();
            same_target
                && registered
                    .query_pairs()
                    .all(|pair| requested_pairs.contains(&pair))
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::resource::Resource;

    fn app() -> AppSpec {
        AppSpec {
            client_id: "cid".into(),
            client_secret: "s".into(),
            redirect_uris: vec!["https://a.example/cb?tenant=1".into()],
            permissions: vec!["contacts:read".into(), "activities:write".into()],
        }
    }

    #[test]
    fn write_implies_read_and_families_are_separate() {
        let app = app();
        let allows = |resource: Resource, access| app.allows_family(resource.family(), access);
        assert!(allows(Resource::Contacts, Access::Read));
        assert!(!allows(Resource::Contacts, Access::Write));
        assert!(allows(Resource::Activities, Access::Read));
        assert!(allows(Resource::Activities, Access::Write));
        assert!(!allows(Resource::CalendarEntries, Access::Read));
        assert!(!app.allows_family("webhooks", Access::Read));
    }

    #[test]
    fn redirect_must_be_registered_but_may_add_query_parameters() {
        let app = app();
        assert!(app.accepts_redirect("https://a.example/cb?tenant=1"));
        assert!(app.accepts_redirect("https://a.example/cb?tenant=1&x=2"));
        assert!(!app.accepts_redirect("https://a.example/cb"));
        assert!(!app.accepts_redirect("https://a.example/cb2?tenant=1"));
        assert!(!app.accepts_redirect("http://a.example/cb?tenant=1"));
    }
}
