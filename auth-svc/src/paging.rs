//! Keyset paging for list RPCs: the page token is the last id of the previous page.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use proto::common::v1::{PageRequest, PageResponse};
use uuid::Uuid;

use crate::error::AuthError;

const DEFAULT_PAGE: u32 = 50;
const MAX_PAGE: u32 = 500;

#[derive(Debug, Clone, Copy)]
pub struct Page {
    pub limit: i64,
    pub after: Option<Uuid>,
}

impl Page {
    pub fn from_wire(page: Option<&PageRequest>) -> Result<Page, AuthError> {
        let size = page.map_or(0, |p| p.page_size);
        let size = if size == 0 {
            DEFAULT_PAGE
        } else {
            size.min(MAX_PAGE)
        };
        let after = match page.map(|p| p.page_token.as_str()) {
            None | Some("") => None,
            Some(token) => {
                let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| {
                    AuthError::invalid("page.page_token", "not a token from this service")
                })?;
                Some(Uuid::from_slice(&bytes).map_err(|_| {
                    AuthError::invalid("page.page_token", "not a token from this service")
                })?)
            }
        };
        Ok(Page {
            limit: i64::from(size),
            after,
        })
    }

    /// Asks the query for one row more than the page, to know whether another follows.
    pub fn fetch_limit(&self) -> i64 {
        self.limit + 1
    }

    /// Trims `rows` to the page and says how to get the next one.
    pub fn finish<T>(
        &self,
        mut rows: Vec<T>,
        id_of: impl Fn(&T) -> Uuid,
    ) -> (Vec<T>, PageResponse) {
        let limit = usize::try_from(self.limit).unwrap_or(usize::MAX);
        let next_page_token = if rows.len() > limit {
            rows.truncate(limit);
            rows.last()
                .map(|last| URL_SAFE_NO_PAD.encode(id_of(last).as_bytes()))
                .unwrap_or_default()
        } else {
            String::new()
        };
        (rows, PageResponse { next_page_token })
    }
}
