//! Pushes the test busybox image (Debian's busybox-static, one layer) to a
//! plain-HTTP registry: `push-busybox 127.0.0.1:5000` prints the reference.
//! `make run` (tests/demo.sh) uses it to fill the registry it pulls from.

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let Some(host) = std::env::args().nth(1) else {
        eprintln!("usage: push-busybox HOST:PORT");
        std::process::exit(2);
    };
    println!("{}", vessel_e2e::registry::push_busybox(&host).await);
}
