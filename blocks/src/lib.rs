//! roster-blocks: the pieces a workflow is made of.
//!
//! Everything here is pure with respect to storage: a block gets a context (the record,
//! run variables, an HTTP client, a credential) and returns an outcome. Durability lives
//! in `roster-engine`, which calls into this crate.

pub mod credential;
pub mod diag;
pub mod duration;
pub mod fields;
pub mod http;
pub mod kinds;
pub mod paging;
pub mod path;
pub mod preset;
pub mod redact;
pub mod rules;
pub mod template;

pub use diag::{ConfigError, Diagnostics};
