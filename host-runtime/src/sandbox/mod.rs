//! Pod sandboxes: each one a microVM.

pub mod manager;
pub mod sizing;
