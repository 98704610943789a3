//! The in-process half of single-flight refresh (see [`super`]): refreshes of one
//! connection queue behind each other in this process.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use uuid::Uuid;

use crate::domain::ConnectionId;
use crate::error::AuthError;

/// The in-process half of single flight: the refreshes of one connection queue here, so
/// only one task per process claims, calls Clio or polls Postgres for a connection at a
/// time, and those that queued behind a refresh Clio failed share its failure instead of
/// each calling Clio again. Holds no database connection.
#[derive(Clone, Default)]
pub struct RefreshFlights {
    lanes: Arc<Mutex<HashMap<Uuid, Arc<Lane>>>>,
}

type Lane = tokio::sync::Mutex<Option<(Instant, SharedFailure)>>;

/// This task's turn at refreshing one connection; the next one queued goes on drop.
pub(super) struct Flight {
    flights: RefreshFlights,
    id: Uuid,
    entered: Instant,
    turn: Option<tokio::sync::OwnedMutexGuard<Option<(Instant, SharedFailure)>>>,
}

impl RefreshFlights {
    pub(super) async fn enter(&self, id: ConnectionId) -> Flight {
        let entered = Instant::now();
        let lane = self
            .lanes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(id.0)
            .or_default()
            .clone();
        Flight {
            flights: self.clone(),
            id: id.0,
            entered,
            turn: Some(lane.lock_owned().await),
        }
    }
}

impl Flight {
    /// How the refresh that finished while this task queued failed at Clio, if it did.
    pub(super) fn failure_while_queued(&self) -> Option<AuthError> {
        match self.turn.as_deref() {
            Some(Some((at, failure))) if *at >= self.entered => Some(failure.to_error()),
            _ => None,
        }
    }

    pub(super) fn record(&mut self, error: &AuthError) {
        if let (Some(turn), Some(failure)) = (self.turn.as_mut(), SharedFailure::of(error)) {
            **turn = Some((Instant::now(), failure));
        }
    }
}

impl Drop for Flight {
    fn drop(&mut self) {
        self.turn.take();
        let mut lanes = self
            .flights
            .lanes
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // Only the map holds it: nobody is queued, so the entry goes.
        if lanes
            .get(&self.id)
            .is_some_and(|lane| Arc::strong_count(lane) == 1)
        {
            lanes.remove(&self.id);
        }
    }
}

/// A Clio failure every refresh queued behind it gets too.
#[derive(Clone)]
enum SharedFailure {
    Unavailable(String),
    Refused(String),
}

impl SharedFailure {
    fn of(error: &AuthError) -> Option<SharedFailure> {
        match error {
            AuthError::ClioUnavailable(message) => {
                Some(SharedFailure::Unavailable(message.clone()))
            }
            AuthError::FailedPrecondition(message) => Some(SharedFailure::Refused(message.clone())),
            _ => None,
        }
    }

    fn to_error(&self) -> AuthError {
        match self {
            SharedFailure::Unavailable(message) => AuthError::ClioUnavailable(message.clone()),
            SharedFailure::Refused(message) => AuthError::FailedPrecondition(message.clone()),
        }
    }
}
