//! The `demo` command's building blocks.
//!
//! [`sim`] is an in-process fake of Ollama's HTTP API. The demo scenario runs the proxy in
//! front of it, and the proxy's integration tests and benchmarks use it as the upstream, so
//! that nothing in the repository needs a real Ollama (or a GPU) to exercise the proxy.

pub mod scenario;
pub mod sim;
