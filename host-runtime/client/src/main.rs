//! `vessel`: a CRI client with crictl's verbs.

fn main() {}
