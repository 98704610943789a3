//! Import jobs: what they ask for ([`spec`]), how queue bodies decode ([`body`]), their
//! stored state and checkpoints ([`store`]), how one runs ([`runner`]) and how a page's
//! records are stored, skipping those Postgres cannot hold ([`page_records`]).

pub mod body;
pub mod page_records;
pub mod runner;
pub mod spec;
pub mod store;
