//! `Debug` for the messages that carry a secret (build.rs skips prost's derived `Debug`
//! for them): every field is shown except the secret ones, which show only whether they
//! are set. So a message logged with `{:?}` (a tonic trace, a test failure, a panic)
//! never prints an access token, an authorization code, a state or a client secret.

use std::fmt;

use crate::auth::v1::{
    CompleteAuthorizationRequest, LeaseAccessTokenResponse, RegisterAppRequest,
    ReplaceAppSecretRequest, StartAuthorizationResponse,
};

/// A secret field: `[REDACTED]` when set, `""` when empty.
struct Redacted<'a>(&'a str);

impl fmt::Debug for Redacted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_empty() {
            "\"\""
        } else {
            "[REDACTED]"
        })
    }
}

impl fmt::Debug for RegisterAppRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegisterAppRequest")
            .field("tenant", &self.tenant)
            .field("name", &self.name)
            .field("region", &self.region)
            .field("client_id", &self.client_id)
            .field("client_secret", &Redacted(&self.client_secret))
            .field("redirect_uris", &self.redirect_uris)
            .field("declared_scopes", &self.declared_scopes)
            .field("pkce_enabled", &self.pkce_enabled)
            .finish()
    }
}

impl fmt::Debug for ReplaceAppSecretRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplaceAppSecretRequest")
            .field("app_id", &self.app_id)
            .field("client_secret", &Redacted(&self.client_secret))
            .field("reason", &self.reason)
            .finish()
    }
}

impl fmt::Debug for StartAuthorizationResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The authorization URL carries the state in its query.
        f.debug_struct("StartAuthorizationResponse")
            .field("authorization_url", &Redacted(&self.authorization_url))
            .field("state", &Redacted(&self.state))
            .field("expires_at", &self.expires_at)
            .field("mode", &self.mode)
            .finish()
    }
}

impl fmt::Debug for CompleteAuthorizationRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CompleteAuthorizationRequest")
            .field("state", &Redacted(&self.state))
            .field("code", &Redacted(&self.code))
            .finish()
    }
}

impl fmt::Debug for LeaseAccessTokenResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LeaseAccessTokenResponse")
            .field("lease_id", &self.lease_id)
            .field("access_token", &Redacted(&self.access_token))
            .field("expires_at", &self.expires_at)
            .field("region", &self.region)
            .field("api_base_url", &self.api_base_url)
            .field("clio_account_id", &self.clio_account_id)
            .field("granted_scopes", &self.granted_scopes)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "s3cr3t-value-9f2c";

    fn assert_hidden(debug: String) {
        assert!(!debug.contains(SECRET), "{debug}");
        assert!(debug.contains("[REDACTED]"), "{debug}");
    }

    #[test]
    fn messages_carrying_secrets_print_none_of_them() {
        assert_hidden(format!(
            "{:?}",
            RegisterAppRequest {
                client_id: "import-app".into(),
                client_secret: SECRET.into(),
                ..Default::default()
            }
        ));
        assert_hidden(format!(
            "{:?}",
            ReplaceAppSecretRequest {
                app_id: "app-1".into(),
                client_secret: SECRET.into(),
                reason: "regenerated".into(),
            }
        ));
        assert_hidden(format!(
            "{:?}",
            CompleteAuthorizationRequest {
                state: SECRET.into(),
                code: format!("{SECRET}-code"),
            }
        ));
        assert_hidden(format!(
            "{:?}",
            StartAuthorizationResponse {
                authorization_url: format!("https://app.clio.com/oauth/authorize?state={SECRET}"),
                state: SECRET.into(),
                ..Default::default()
            }
        ));
        let lease = LeaseAccessTokenResponse {
            lease_id: "lease-1".into(),
            access_token: SECRET.into(),
            ..Default::default()
        };
        assert_hidden(format!("{lease:?}"));
        assert_hidden(format!("{lease:#?}"));
        // The rest is still there to debug with.
        assert!(format!("{lease:?}").contains("lease-1"));
    }

    #[test]
    fn an_empty_secret_shows_as_empty() {
        let debug = format!("{:?}", CompleteAuthorizationRequest::default());
        assert!(debug.contains("code: \"\""), "{debug}");
    }
}
