//! Generates the agent API (tonic + prost) from every `.proto` file in `proto/`.
//!
//! protoc comes from `protoc-bin-vendored`, so no system `protoc` is needed.

use std::error::Error;
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn Error>> {
    let proto_dir = PathBuf::from("proto");
    // Every file in the folder, sorted, so new services slot in without edits here.
    let mut protos: Vec<PathBuf> = std::fs::read_dir(&proto_dir)?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "proto"))
        .collect();
    protos.sort();
    println!("cargo:rerun-if-changed={}", proto_dir.display());

    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);

    // The vendored well-known types (google/protobuf/*.proto) for later imports.
    let includes = [proto_dir, protoc_bin_vendored::include_path()?];
    tonic_prost_build::configure().compile_with_config(config, &protos, &includes)?;
    Ok(())
}
