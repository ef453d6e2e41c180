//! roster-connectors
