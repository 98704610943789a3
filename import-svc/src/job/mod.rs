//! Import jobs: what they ask for ([`spec`]) and which of Clio's lists they read
//! ([`listing`]), how queue bodies decode ([`body`]), their stored state ([`store`]) and
//! per-resource checkpoints ([`checkpoints`]), how one runs through Clio's lists ([`runner`], on [`clio_api::Lister`]) and
//! how a page's records are stored, skipping those Postgres cannot hold ([`page_records`]),
//! and how many connections page writes may hold at once ([`write_slots`]).

pub mod body;
pub mod checkpoints;
pub mod listing;
pub mod page_records;
mod pages;
pub mod runner;
pub mod spec;
pub mod store;
pub mod write_slots;
