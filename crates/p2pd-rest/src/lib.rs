//! The REST face of p2pd: the original project's HTTP API on
//! 127.0.0.1:12333, served over a `p2pd-node` node.
//!
//! This crate holds no networking logic of its own; it translates HTTP
//! requests into node commands. The routes arrive with the REST issue; until
//! then the crate only fixes its place in the layering (rest → node → net →
//! proto).
#![warn(missing_docs)]
