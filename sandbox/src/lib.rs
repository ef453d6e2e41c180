//! roster-sandbox
