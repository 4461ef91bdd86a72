//! `vesseld`: the CRI runtime daemon. The CRI services arrive with later
//! issues; for now it only reports what it is.

fn main() {
    println!(
        "vesseld {}: CRI services are not available in this build yet",
        env!("CARGO_PKG_VERSION")
    );
}
