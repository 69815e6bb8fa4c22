//! gin (in progress)
