//! serve wiring (in progress)
