//! Fault injection: the upstream killed or restarted under load, descriptors exhausted, a full
//! disk under the detection log, a read-only state dir, a SIGHUP storm and 10 000 sources.
//!
//! Every scenario prints one line `reliability: <name> sent=N answered=N lost=N (...)` and
//! asserts the invariant: nothing accepted is lost silently. Each request either got an HTTP
//! answer or a client-visible error (connection error, aborted stream), and every loss is
//! also counted in a metric.
#![allow(clippy::unwrap_used)]

#[path = "../common/mod.rs"]
mod common;

mod support;

mod descriptors;
mod disks;
mod storm;
mod upstream;
