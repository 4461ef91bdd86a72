//! What the host-side network tests share.

/// Whether a test that needs root and /dev/net/tun can run: in CI (`CI=true`)
/// a missing one fails the test instead of skipping it.
pub fn root_and_tun(test: &str) -> bool {
    let missing = if !nix::unistd::geteuid().is_root() {
        Some("not root")
    } else if !std::path::Path::new("/dev/net/tun").exists() {
        Some("no /dev/net/tun")
    } else {
        None
    };
    match missing {
        None => true,
        Some(why) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("{test} needs root and /dev/net/tun: {why}")
        }
        Some(why) => {
            eprintln!("skipped: {why}");
            false
        }
    }
}
