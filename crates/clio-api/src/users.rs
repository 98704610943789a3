//! `GET /api/v4/users/who_am_i`: who a token belongs to (the Clio user and firm).

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::client::ClioClient;
use crate::error::ClioError;
use crate::observer::Endpoint;
use crate::region::Region;

/// The Clio user and account (firm) behind a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WhoAmI {
    pub user_id: String,
    pub name: String,
    pub email: String,
    pub account_id: String,
    pub account_name: String,
}

/// The fields asked for: without `fields`, Clio returns only `id` and `etag`.
const WHO_AM_I_FIELDS: &str = "id,name,email,account{id,name}";

#[derive(Deserialize)]
struct Envelope {
    data: User,
}

#[derive(Deserialize)]
struct User {
    id: Id,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    account: Option<Account>,
}

#[derive(Deserialize)]
struct Account {
    #[serde(default)]
    id: Option<Id>,
    #[serde(default)]
    name: Option<String>,
}

/// Clio ids are integers; accept strings too.
#[derive(Deserialize)]
#[serde(untagged)]
enum Id {
    Number(i64),
    Text(String),
}

impl Id {
    fn into_string(self) -> String {
        match self {
            Id::Number(n) => n.to_string(),
            Id::Text(s) => s,
        }
    }
}

impl ClioClient {
    /// Identifies the user and firm of `access_token` in `region`.
    #[tracing::instrument(skip_all, fields(region = %region))]
    pub async fn who_am_i(
        &self,
        region: Region,
        access_token: &SecretString,
    ) -> Result<WhoAmI, ClioError> {
        let url = format!("{}/users/who_am_i.json", self.api_base_url(region));
        let request = self
            .http()
            .get(url)
            .query(&[("fields", WHO_AM_I_FIELDS)])
            .header("X-API-VERSION", crate::API_VERSION)
            .bearer_auth(access_token.expose_secret());
        let response = self.send(Endpoint::WhoAmI, request).await?;
        let body = response
            .bytes()
            .await
            .map_err(|e| ClioError::from_transport(&e))?;
        let envelope: Envelope = serde_json::from_slice(&body).map_err(|e| ClioError::Other {
            status: Some(200),
            detail: format!("malformed who_am_i answer: {e}"),
        })?;
        let user = envelope.data;
        let account = user.account.unwrap_or(Account {
            id: None,
            name: None,
        });
        Ok(WhoAmI {
            user_id: user.id.into_string(),
            name: user.name.unwrap_or_default(),
            email: user.email.unwrap_or_default(),
            account_id: account.id.map(Id::into_string).unwrap_or_default(),
            account_name: account.name.unwrap_or_default(),
        })
    }
}
