//! Import jobs: what they ask for ([`spec`]), how queue bodies decode ([`body`]), their
//! stored state and checkpoints ([`store`]) and how one runs ([`runner`]).

pub mod body;
pub mod runner;
pub mod spec;
pub mod store;
