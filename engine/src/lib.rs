//! roster-engine
