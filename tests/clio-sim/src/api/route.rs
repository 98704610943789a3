//! Which API v4 endpoint a path names; `.json` is optional, as clients call both.

use crate::resource::Resource;

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum ApiRoute {
    WhoAmI,
    Collection(Resource),
    Record(Resource, String),
    /// `/webhooks`
    Webhooks,
    /// `/webhooks/{id}`
    Webhook(String),
    /// `/webhooks/{id}/activate`: confirming the handshake later.
    ActivateWebhook(String),
}

/// Parses a full request path (`/api/v4/contacts/12.json`).
pub(crate) fn parse(path: &str) -> Option<ApiRoute> {
    let rest = path.strip_prefix("/api/v4/")?;
    let rest = rest.strip_suffix(".json").unwrap_or(rest);
    let mut segments = rest.split('/');
    let first = segments.next()?;
    if first == "webhooks" {
        let route = match (segments.next(), segments.next(), segments.next()) {
            (None, _, _) => ApiRoute::Webhooks,
            (Some(id), None, _) if !id.is_empty() => ApiRoute::Webhook(id.to_owned()),
            (Some(id), Some("activate"), None) if !id.is_empty() => {
                ApiRoute::ActivateWebhook(id.to_owned())
            }
            _ => return None,
        };
        return Some(route);
    }
    let resource: Resource = first.parse().ok()?;
    let route = match (segments.next(), segments.next()) {
        (None, _) => ApiRoute::Collection(resource),
        (Some("who_am_i"), None) if resource == Resource::Users => ApiRoute::WhoAmI,
        (Some(id), None) if !id.is_empty() => ApiRoute::Record(resource, id.to_owned()),
        _ => return None,
    };
    Some(route)
}

/// The endpoint under which a call is counted: ids and `.json` removed.
pub(crate) fn endpoint_template(path: &str) -> String {
    match parse(path) {
        Some(ApiRoute::WhoAmI) => "/api/v4/users/who_am_i".to_owned(),
        Some(ApiRoute::Collection(resource)) => resource.index_endpoint().to_owned(),
        Some(ApiRoute::Record(resource, _)) => resource.record_endpoint().to_owned(),
        Some(ApiRoute::Webhooks) => "/api/v4/webhooks".to_owned(),
        Some(ApiRoute::Webhook(_)) => "/api/v4/webhooks/{id}".to_owned(),
        Some(ApiRoute::ActivateWebhook(_)) => "/api/v4/webhooks/{id}/activate".to_owned(),
        None => path.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_with_and_without_json_name_the_same_endpoint() {
        assert_eq!(
            parse("/api/v4/contacts.json"),
            Some(ApiRoute::Collection(Resource::Contacts))
        );
        assert_eq!(
            parse("/api/v4/contacts"),
            Some(ApiRoute::Collection(Resource::Contacts))
        );
        assert_eq!(parse("/api/v4/users/who_am_i.json"), Some(ApiRoute::WhoAmI));
        assert_eq!(
            parse("/api/v4/calendar_entries/41_20250101.json"),
            Some(ApiRoute::Record(
                Resource::CalendarEntries,
                "41_20250101".into()
            ))
        );
        assert_eq!(parse("/api/v4/bills.json"), None);
        assert_eq!(parse("/api/v4/contacts/1/notes"), None);
        assert_eq!(
            endpoint_template("/api/v4/matters/5.json"),
            "/api/v4/matters/{id}"
        );
        assert_eq!(parse("/api/v4/webhooks.json"), Some(ApiRoute::Webhooks));
        assert_eq!(
            parse("/api/v4/webhooks/7.json"),
            Some(ApiRoute::Webhook("7".into()))
        );
        assert_eq!(
            parse("/api/v4/webhooks/7/activate"),
            Some(ApiRoute::ActivateWebhook("7".into()))
        );
        assert_eq!(parse("/api/v4/webhooks/7/nope"), None);
        assert_eq!(
            endpoint_template("/api/v4/webhooks/12/activate.json"),
            "/api/v4/webhooks/{id}/activate"
        );
    }
}
