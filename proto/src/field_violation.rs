//! The one shape of "this request field is wrong": a field path and the problem, sent as
//! `INVALID_ARGUMENT` with the standard `google.rpc.BadRequest` detail, so a client in any
//! language reads which field was wrong without parsing the message.

use std::fmt;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// A request field and what is wrong with it (`resources[2]`, `not a known resource`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    pub field: String,
    pub problem: String,
}

impl FieldViolation {
    pub fn new(field: impl Into<String>, problem: impl Into<String>) -> Self {
        FieldViolation {
            field: field.into(),
            problem: problem.into(),
        }
    }

    /// `INVALID_ARGUMENT` with message `field: problem` and the `BadRequest` detail.
    pub fn into_status(self) -> Status {
        let message = self.to_string();
        Status::with_error_details(
            Code::InvalidArgument,
            message,
            ErrorDetails::with_bad_request_violation(self.field, self.problem),
        )
    }

    /// The violations a status carries in its `BadRequest` detail (clients and tests).
    pub fn of(status: &Status) -> Vec<FieldViolation> {
        status
            .get_details_bad_request()
            .map(|bad_request| {
                bad_request
                    .field_violations
                    .into_iter()
                    .map(|v| FieldViolation::new(v.field, v.description))
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl fmt::Display for FieldViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.problem)
    }
}

impl std::error::Error for FieldViolation {}

impl From<FieldViolation> for Status {
    fn from(violation: FieldViolation) -> Status {
        violation.into_status()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_field_travels_in_the_standard_detail_and_the_message() {
        let status = FieldViolation::new("resources[1]", "not a known resource").into_status();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(status.message(), "resources[1]: not a known resource");
        assert_eq!(
            FieldViolation::of(&status),
            vec![FieldViolation::new("resources[1]", "not a known resource")]
        );
        assert!(FieldViolation::of(&Status::internal("x")).is_empty());
    }
}
