//! The domain types requests are validated into: ids, principals, tenants, statuses.

use std::fmt;
use std::str::FromStr;

use scope_catalog::{Scope, ScopeSet};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::AuthError;

/// Parses a UUID request field.
fn uuid_field(field: &str, raw: &str) -> Result<Uuid, AuthError> {
    if raw.trim().is_empty() {
        return Err(AuthError::invalid(field, "must not be empty"));
    }
    Uuid::parse_str(raw.trim()).map_err(|_| AuthError::invalid(field, "must be a UUID"))
}

macro_rules! id_type {
    ($name:ident) => {
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub Uuid);

        impl $name {
            pub fn new() -> Self {
                $name(Uuid::now_v7())
            }

            pub fn parse(field: &str, raw: &str) -> Result<Self, AuthError> {
                uuid_field(field, raw).map($name)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

id_type!(AppId);
id_type!(ConnectionId);

/// Bounded, non-empty text without control characters.
fn text_field(field: &str, raw: &str, max: usize) -> Result<String, AuthError> {
    let text = raw.trim();
    if text.is_empty() {
        return Err(AuthError::invalid(field, "must not be empty"));
    }
    if text.chars().count() > max {
        return Err(AuthError::invalid(
            field,
            format!("must be at most {max} characters"),
        ));
    }
    if text.chars().any(char::is_control) {
        return Err(AuthError::invalid(
            field,
            "must not contain control characters",
        ));
    }
    Ok(text.to_owned())
}

/// The firm person a connection belongs to (never a shared login).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Principal(pub String);

impl Principal {
    pub fn parse(field: &str, raw: &str) -> Result<Self, AuthError> {
        text_field(field, raw, 320).map(Principal)
    }
}

/// The firm; each has its own audit chain.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Tenant(pub String);

impl Tenant {
    pub fn parse(field: &str, raw: &str) -> Result<Self, AuthError> {
        text_field(field, raw, 128).map(Tenant)
    }
}

/// Free text a person gives (a reason, a note, an app name).
pub fn required_text(field: &str, raw: &str, max: usize) -> Result<String, AuthError> {
    text_field(field, raw, max)
}

macro_rules! text_enum {
    ($name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($variant),+ }

        impl $name {
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl FromStr for $name {
            type Err = AuthError;
            fn from_str(s: &str) -> Result<Self, AuthError> {
                match s {
                    $($text => Ok($name::$variant),)+
                    other => Err(AuthError::Internal(format!(
                        "unknown {} {other:?} in the database", stringify!($name)
                    ))),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

text_enum!(AppStatus {
    PendingApproval => "pending_approval",
    Approved => "approved",
    Revoked => "revoked",
    Rejected => "rejected",
});

text_enum!(ConnectionStatus {
    Active => "active",
    NeedsReconnect => "needs_reconnect",
    Revoked => "revoked",
});

text_enum!(Mode {
    Web => "web",
    OutOfBand => "out_of_band",
});

/// A declared scope and the written reason the app needs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeclaredScope {
    pub scope: Scope,
    pub justification: String,
}

/// An app's declared scopes, one per family.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DeclaredScopes(pub Vec<DeclaredScope>);

impl DeclaredScopes {
    pub fn scope_set(&self) -> ScopeSet {
        self.0.iter().map(|d| d.scope).collect()
    }
}
