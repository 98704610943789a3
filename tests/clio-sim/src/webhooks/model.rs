//! What a subscription can name: Clio's webhook models, their events, and a
//! subscription's status.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::resource::Resource;

/// A Clio model a webhook subscribes to. Clio accepts the identifier or its number on
/// create; the simulator serves records of the first four, so only those ever fire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WebhookModel {
    Matter,
    Activity,
    Bill,
    CalendarEntry,
    Communication,
    Contact,
    Task,
    Document,
    Folder,
    ClioPaymentsPayment,
}

impl WebhookModel {
    /// In the order of Clio's numbering (matter is 1).
    const ALL: [WebhookModel; 10] = [
        WebhookModel::Matter,
        WebhookModel::Activity,
        WebhookModel::Bill,
        WebhookModel::CalendarEntry,
        WebhookModel::Communication,
        WebhookModel::Contact,
        WebhookModel::Task,
        WebhookModel::Document,
        WebhookModel::Folder,
        WebhookModel::ClioPaymentsPayment,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            WebhookModel::Matter => "matter",
            WebhookModel::Activity => "activity",
            WebhookModel::Bill => "bill",
            WebhookModel::CalendarEntry => "calendar_entry",
            WebhookModel::Communication => "communication",
            WebhookModel::Contact => "contact",
            WebhookModel::Task => "task",
            WebhookModel::Document => "document",
            WebhookModel::Folder => "folder",
            WebhookModel::ClioPaymentsPayment => "clio_payments_payment",
        }
    }

    /// The `model` of a create or update body: an identifier (`"contact"`) or Clio's
    /// number for it (`6` or `"6"`).
    pub(crate) fn from_wire(value: &Value) -> Option<WebhookModel> {
        let number = match value {
            Value::Number(number) => number.as_u64(),
            Value::String(text) => match text.trim().parse::<u64>() {
                Ok(number) => Some(number),
                Err(_) => {
                    return WebhookModel::ALL
                        .into_iter()
                        .find(|model| model.as_str() == text.trim());
                }
            },
            _ => None,
        }?;
        let index = usize::try_from(number.checked_sub(1)?).ok()?;
        WebhookModel::ALL.get(index).copied()
    }

    /// The permission family the app needs to read (Clio: the model's scope); folders use
    /// the documents scope.
    pub(crate) fn family(self) -> &'static str {
        match self {
            WebhookModel::Matter => "matters",
            WebhookModel::Activity => "activities",
            WebhookModel::Bill => "billing",
            WebhookModel::CalendarEntry => "calendar",
            WebhookModel::Communication => "communications",
            WebhookModel::Contact => "contacts",
            WebhookModel::Task => "tasks",
            WebhookModel::Document | WebhookModel::Folder => "documents",
            WebhookModel::ClioPaymentsPayment => "clio_payments",
        }
    }

    /// The served resource whose changes this model hears, if the simulator serves it.
    pub(crate) fn resource(self) -> Option<Resource> {
        match self {
            WebhookModel::Matter => Some(Resource::Matters),
            WebhookModel::Activity => Some(Resource::Activities),
            WebhookModel::CalendarEntry => Some(Resource::CalendarEntries),
            WebhookModel::Contact => Some(Resource::Contacts),
            _ => None,
        }
    }

    /// The model that hears changes of a served resource (users have none).
    pub(crate) fn of(resource: Resource) -> Option<WebhookModel> {
        WebhookModel::ALL
            .into_iter()
            .find(|model| model.resource() == Some(resource))
    }

    /// Whether Clio fires `event` for this model: payments are never deleted, and only
    /// matters have status events.
    pub(crate) fn supports(self, event: WebhookEvent) -> bool {
        match event {
            WebhookEvent::Created | WebhookEvent::Updated => true,
            WebhookEvent::Deleted => self != WebhookModel::ClioPaymentsPayment,
            WebhookEvent::MatterOpened
            | WebhookEvent::MatterPended
            | WebhookEvent::MatterClosed => self == WebhookModel::Matter,
        }
    }

    /// Every event the model supports: what a subscription that names none hears.
    pub(crate) fn all_events(self) -> Vec<WebhookEvent> {
        WebhookEvent::ALL
            .into_iter()
            .filter(|event| self.supports(*event))
            .collect()
    }
}

impl fmt::Display for WebhookModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What happened to a record (`meta.event` of a delivery).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WebhookEvent {
    Created,
    Updated,
    Deleted,
    /// A matter's status became `Open`.
    MatterOpened,
    /// A matter's status became `Pending`.
    MatterPended,
    /// A matter's status became `Closed`.
    MatterClosed,
}

impl WebhookEvent {
    const ALL: [WebhookEvent; 6] = [
        WebhookEvent::Created,
        WebhookEvent::Updated,
        WebhookEvent::Deleted,
        WebhookEvent::MatterOpened,
        WebhookEvent::MatterPended,
        WebhookEvent::MatterClosed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            WebhookEvent::Created => "created",
            WebhookEvent::Updated => "updated",
            WebhookEvent::Deleted => "deleted",
            WebhookEvent::MatterOpened => "matter_opened",
            WebhookEvent::MatterPended => "matter_pended",
            WebhookEvent::MatterClosed => "matter_closed",
        }
    }

    pub(crate) fn from_wire(text: &str) -> Option<WebhookEvent> {
        WebhookEvent::ALL
            .into_iter()
            .find(|event| event.as_str() == text)
    }

    /// The status event for a matter whose status became `status`.
    pub(crate) fn of_matter_status(status: &str) -> Option<WebhookEvent> {
        match status {
            "Open" => Some(WebhookEvent::MatterOpened),
            "Pending" => Some(WebhookEvent::MatterPended),
            "Closed" => Some(WebhookEvent::MatterClosed),
            _ => None,
        }
    }
}

impl fmt::Display for WebhookEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A subscription's `status`, as Clio names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WebhookStatus {
    /// Created (or its URL changed) and the handshake is not confirmed: nothing is
    /// delivered.
    Pending,
    /// Delivering.
    Enabled,
    /// Stopped after the receiver answered `410 Gone` or kept failing.
    Suspended,
}

impl WebhookStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            WebhookStatus::Pending => "pending",
            WebhookStatus::Enabled => "enabled",
            WebhookStatus::Suspended => "suspended",
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn models_are_named_by_identifier_or_clio_number() {
        assert_eq!(
            WebhookModel::from_wire(&json!("contact")),
            Some(WebhookModel::Contact)
        );
        assert_eq!(
            WebhookModel::from_wire(&json!(1)),
            Some(WebhookModel::Matter)
        );
        assert_eq!(
            WebhookModel::from_wire(&json!("4")),
            Some(WebhookModel::CalendarEntry)
        );
        assert_eq!(WebhookModel::from_wire(&json!(11)), None);
        assert_eq!(WebhookModel::from_wire(&json!(0)), None);
        assert_eq!(WebhookModel::from_wire(&json!("contacts")), None);
        assert_eq!(WebhookModel::of(Resource::Users), None);
        assert_eq!(
            WebhookModel::of(Resource::CalendarEntries),
            Some(WebhookModel::CalendarEntry)
        );
    }

    #[test]
    fn status_events_belong_to_matters_and_payments_are_never_deleted() {
        assert!(WebhookModel::Matter.supports(WebhookEvent::MatterClosed));
        assert!(!WebhookModel::Contact.supports(WebhookEvent::MatterOpened));
        assert!(!WebhookModel::ClioPaymentsPayment.supports(WebhookEvent::Deleted));
        assert_eq!(WebhookModel::Contact.all_events().len(), 3);
        assert_eq!(WebhookModel::Matter.all_events().len(), 6);
    }
}
