//! Generates the gRPC code for `proto/mend/v1/mend.proto` with the vendored
//! `protoc` (no system install), plus a file descriptor set for reflection.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Read at run time, not with env!(): a build-script binary compiled in
    // one checkout can be reused from a shared target directory by another.
    let manifest = std::path::PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let proto_dir = manifest.join("../../proto");
    let file = proto_dir.join("mend/v1/mend.proto");
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    println!("cargo:rerun-if-changed={}", file.display());
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out.join("mend_descriptor.bin"))
        .compile_with_config(config, &[file], &[proto_dir])?;
    Ok(())
}
