//! Containers of a pod: what vesseld asks the agent to run.

pub mod spec;
