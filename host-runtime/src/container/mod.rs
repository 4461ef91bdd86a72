//! Containers of a pod: what vesseld asks the agent to run.

pub mod cri_log;
pub mod exec;
pub mod fanout;
pub mod manager;
pub mod share;
pub mod spec;
