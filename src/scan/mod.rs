//! scan (in progress)
