//! roster-engine: workflow loading and validation, durable per-user runs, the store,
//! the credential vault and the clock.

pub mod clock;
pub mod credentials;
pub mod error;
pub mod home;
pub mod model;
pub mod presets;
pub mod records;
pub mod retention;
pub mod run;
pub mod select;
pub mod service;
pub mod store;
pub mod sync;
pub mod sync_lease;
pub mod vault;
pub mod workflow;

pub use error::{Error, Result};
