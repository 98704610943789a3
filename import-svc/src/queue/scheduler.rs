//! Which received job a replica starts next: fair across connections, by priority.
//!
//! The broker hands jobs over first come, first served. Started in that order, one
//! connection's backlog of fifty jobs would hold up every other connection for fifty
//! jobs' time, and two jobs of one connection would split its token's rate limit between
//! them. So the consumer takes a window of deliveries (`amqp.prefetch`, more than it has
//! job slots) and this scheduler chooses among them:
//!
//! - **Priority first:** an interactive job starts before a scheduled one, a scheduled one
//!   before a backfill, whenever both are waiting.
//! - **Turns within a priority:** the connection whose last job started longest ago goes
//!   first (a connection new to this replica counts as never served). So a connection that
//!   arrives behind another's backlog waits for at most the jobs already running.
//! - **One job per connection** at a time (`importer.max_jobs_per_connection`); across
//!   replicas the consumer adds a Postgres lock per connection slot.
//! - **A bounded hold per connection:** a replica keeps at most as many waiting jobs of one
//!   connection (per priority) as that connection may run at once. The rest are *deferred*:
//!   the consumer parks them in a delay tier and acks, so a backlog never fills the window
//!   and hides other connections' jobs behind it in the broker.
//!
//! Pure bookkeeping, no I/O: the consumer does what it decides.

use std::collections::{HashMap, VecDeque};

use uuid::Uuid;

use crate::job::spec::Priority;

/// What the scheduler needs to know of a job beyond its connection and priority.
pub trait Job {
    fn job_id(&self) -> Uuid;
}

/// What became of a job offered to the scheduler.
#[derive(Debug, PartialEq, Eq)]
pub enum Admission<T> {
    /// Held here until [`Scheduler::start_next`] starts it.
    Held,
    /// Its connection already has as many jobs waiting here as it may run: park it.
    Defer(T),
}

/// The waiting jobs of one priority, by connection.
#[derive(Debug)]
struct Class<T> {
    waiting: HashMap<String, VecDeque<T>>,
}

impl<T> Default for Class<T> {
    fn default() -> Self {
        Class {
            waiting: HashMap::new(),
        }
    }
}

#[derive(Debug)]
pub struct Scheduler<T> {
    max_running: usize,
    per_connection: usize,
    /// Indexed like [`Priority::ALL`].
    classes: [Class<T>; 3],
    running: HashMap<String, usize>,
    running_total: usize,
    /// When each connection's last job started, in starts counted by `turn`. Forgotten
    /// once the connection has nothing running or waiting here, so the map stays as small
    /// as the window.
    last_started: HashMap<String, u64>,
    turn: u64,
}

impl<T> Scheduler<T> {
    /// `max_running`: job slots; `per_connection`: jobs of one connection at once. Both
    /// at least 1 (the config checks).
    pub fn new(max_running: usize, per_connection: usize) -> Self {
        Scheduler {
            max_running: max_running.max(1),
            per_connection: per_connection.max(1),
            classes: Default::default(),
            running: HashMap::new(),
            running_total: 0,
            last_started: HashMap::new(),
            turn: 0,
        }
    }

    /// Takes a received job, or hands it back to be deferred.
    pub fn admit(&mut self, connection: &str, priority: Priority, job: T) -> Admission<T> {
        let class = &mut self.classes[index(priority)];
        let queue = class.waiting.entry(connection.to_owned()).or_default();
        if queue.len() >= self.per_connection {
            return Admission::Defer(job);
        }
        queue.push_back(job);
        Admission::Held
    }

    /// The next job to start now, if a slot is free and some waiting job's connection may
    /// run another. The caller starts it and later calls [`Scheduler::finished`].
    pub fn start_next(&mut self) -> Option<(String, T)> {
        if self.running_total >= self.max_running {
            return None;
        }
        for class in &mut self.classes {
            let chosen = class
                .waiting
                .keys()
                .filter(|c| self.running.get(*c).copied().unwrap_or(0) < self.per_connection)
                .min_by_key(|c| {
                    (
                        self.last_started.get(*c).copied().unwrap_or(0),
                        (*c).clone(),
                    )
                })
                .cloned();
            let Some(connection) = chosen else { continue };
            let queue = class.waiting.get_mut(&connection)?;
            let job = queue.pop_front()?;
            if queue.is_empty() {
                class.waiting.remove(&connection);
            }
            self.turn += 1;
            self.last_started.insert(connection.clone(), self.turn);
            *self.running.entry(connection.clone()).or_default() += 1;
            self.running_total += 1;
            return Some((connection, job));
        }
        None
    }

    /// A job of `connection` that [`Scheduler::start_next`] started has ended.
    pub fn finished(&mut self, connection: &str) {
        if let Some(count) = self.running.get_mut(connection) {
            *count -= 1;
            self.running_total -= 1;
            if *count == 0 {
                self.running.remove(connection);
                if !self
                    .classes
                    .iter()
                    .any(|c| c.waiting.contains_key(connection))
                {
                    self.last_started.remove(connection);
                }
            }
        }
    }

    /// Every job still waiting (the session is ending: they go back to the broker).
    pub fn drain_waiting(&mut self) -> Vec<T> {
        let mut drained = Vec::new();
        for class in &mut self.classes {
            for (_, queue) in class.waiting.drain() {
                drained.extend(queue);
            }
        }
        drained
    }

    /// Jobs waiting here, for metrics and tests.
    pub fn waiting(&self) -> usize {
        self.classes
            .iter()
            .flat_map(|c| c.waiting.values())
            .map(VecDeque::len)
            .sum()
    }

    pub fn running(&self) -> usize {
        self.running_total
    }
}

impl<T: Job> Scheduler<T> {
    /// The ids of the jobs waiting here.
    pub fn waiting_ids(&self) -> Vec<Uuid> {
        self.classes
            .iter()
            .flat_map(|c| c.waiting.values())
            .flatten()
            .map(Job::job_id)
            .collect()
    }
}

fn index(priority: Priority) -> usize {
    match priority {
        Priority::Interactive => 0,
        Priority::Scheduled => 1,
        Priority::Backfill => 2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn start_all<T>(scheduler: &mut Scheduler<T>) -> Vec<(String, T)> {
        std::iter::from_fn(|| scheduler.start_next()).collect()
    }

    #[test]
    fn a_backlog_of_one_connection_does_not_hold_up_another() {
        let mut scheduler = Scheduler::new(1, 1);
        let mut deferred = Vec::new();
        for n in 0..50 {
            if let Admission::Defer(job) = scheduler.admit("a", Priority::Scheduled, n) {
                deferred.push(job);
            }
        }
        // One of a's jobs is held, the other 49 go back to the broker.
        assert_eq!(deferred.len(), 49);
        assert_eq!(start_all(&mut scheduler), vec![("a".to_owned(), 0)]);
        // a's next job arrives again from the delay tier, b's first job arrives.
        assert_eq!(
            scheduler.admit("a", Priority::Scheduled, 1),
            Admission::Held
        );
        assert_eq!(
            scheduler.admit("b", Priority::Scheduled, 100),
            Admission::Held
        );
        // The only slot is busy until a's first job ends; then b goes first.
        assert!(scheduler.start_next().is_none());
        scheduler.finished("a");
        assert_eq!(start_all(&mut scheduler), vec![("b".to_owned(), 100)]);
        scheduler.finished("b");
        assert_eq!(start_all(&mut scheduler), vec![("a".to_owned(), 1)]);
    }

    #[test]
    fn a_connection_runs_one_job_at_a_time_and_others_fill_the_slots() {
        let mut scheduler = Scheduler::new(4, 1);
        assert_eq!(
            scheduler.admit("a", Priority::Scheduled, 1),
            Admission::Held
        );
        assert_eq!(
            scheduler.admit("b", Priority::Scheduled, 2),
            Admission::Held
        );
        assert_eq!(start_all(&mut scheduler).len(), 2);
        assert_eq!(
            scheduler.admit("a", Priority::Scheduled, 3),
            Admission::Held
        );
        assert!(scheduler.start_next().is_none(), "a already runs a job");
        assert_eq!(
            scheduler.admit("c", Priority::Scheduled, 4),
            Admission::Held
        );
        assert_eq!(start_all(&mut scheduler), vec![("c".to_owned(), 4)]);
        scheduler.finished("a");
        assert_eq!(start_all(&mut scheduler), vec![("a".to_owned(), 3)]);
        assert_eq!(scheduler.running(), 3);
    }

    #[test]
    fn higher_priority_starts_first_whatever_arrived_earlier() {
        let mut scheduler = Scheduler::new(1, 1);
        scheduler.admit("a", Priority::Backfill, "a-backfill");
        scheduler.admit("b", Priority::Scheduled, "b-scheduled");
        scheduler.admit("c", Priority::Interactive, "c-interactive");
        let mut order = Vec::new();
        while let Some((connection, job)) = scheduler.start_next() {
            order.push(job);
            scheduler.finished(&connection);
        }
        assert_eq!(order, vec!["c-interactive", "b-scheduled", "a-backfill"]);
    }

    #[test]
    fn connections_take_turns_least_recently_served_first() {
        let mut scheduler = Scheduler::new(1, 1);
        let mut order = Vec::new();
        for round in 0..3 {
            for connection in ["a", "b", "c"] {
                // Each connection offers its next job once its held one has started.
                let _ = scheduler.admit(
                    connection,
                    Priority::Scheduled,
                    format!("{connection}{round}"),
                );
            }
            while let Some((connection, job)) = scheduler.start_next() {
                order.push(job);
                scheduler.finished(&connection);
            }
        }
        assert_eq!(
            order,
            ["a0", "b0", "c0", "a1", "b1", "c1", "a2", "b2", "c2"].map(String::from)
        );
    }

    #[test]
    fn the_hold_is_per_priority_so_an_interactive_job_is_never_deferred_behind_a_backfill() {
        let mut scheduler = Scheduler::new(1, 1);
        assert_eq!(scheduler.admit("a", Priority::Backfill, 1), Admission::Held);
        assert_eq!(
            scheduler.admit("a", Priority::Backfill, 2),
            Admission::Defer(2)
        );
        assert_eq!(
            scheduler.admit("a", Priority::Interactive, 3),
            Admission::Held
        );
        assert_eq!(scheduler.start_next(), Some(("a".to_owned(), 3)));
    }

    #[test]
    fn draining_returns_every_waiting_job_and_forgets_finished_connections() {
        let mut scheduler = Scheduler::new(1, 2);
        for n in 0..3 {
            let _ = scheduler.admit("a", Priority::Scheduled, n);
        }
        let _ = scheduler.admit("b", Priority::Backfill, 9);
        let (connection, _) = scheduler.start_next().unwrap();
        assert_eq!(scheduler.waiting(), 2);
        let mut drained = scheduler.drain_waiting();
        drained.sort_unstable();
        assert_eq!(drained, vec![1, 9]);
        scheduler.finished(&connection);
        assert!(scheduler.last_started.is_empty());
        assert_eq!(scheduler.running(), 0);
    }
}
