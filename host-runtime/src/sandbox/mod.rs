//! Pod sandboxes: each one a microVM.

pub mod sizing;
