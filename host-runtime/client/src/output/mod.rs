//! What the verbs print: crictl's JSON shapes and its tables.

pub mod json;
pub mod table;
