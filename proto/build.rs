//! Compiles `proto/strata/v1/strata.proto` with protox (a pure-Rust protobuf
//! compiler), so building needs no system `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let file = "proto/strata/v1/strata.proto";
    println!("cargo:rerun-if-changed={file}");
    let fds = protox::compile([file], ["proto"])?;
    tonic_prost_build::configure()
        // Batches and record payloads are `bytes::Bytes`: no copy when they
        // are decoded from or handed to the transport.
        .bytes(".")
        .compile_fds(fds)?;
    Ok(())
}
