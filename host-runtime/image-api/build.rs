//! Generates the image archive API (tonic + prost) from `proto/archive.proto`.
//!
//! protoc comes from `protoc-bin-vendored`, so no system `protoc` is needed.

use std::error::Error;

fn main() -> Result<(), Box<dyn Error>> {
    println!("cargo:rerun-if-changed=proto");
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    tonic_prost_build::configure().compile_with_config(
        config,
        &[std::path::PathBuf::from("proto/archive.proto")],
        &[
            std::path::PathBuf::from("proto"),
            protoc_bin_vendored::include_path()?,
        ],
    )?;
    Ok(())
}
