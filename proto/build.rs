//! Compiles every `.proto` under `proto/` with protox (pure Rust), so no system `protoc`
//! is needed, and writes the generated code and a file descriptor set (for gRPC
//! reflection) to `OUT_DIR` only.

use std::path::PathBuf;

/// Messages with a field holding a token, code, state or client secret. Keep in step with
/// `src/redacted_debug.rs`.
const SECRET_BEARING: [&str; 5] = [
    ".clio_connect.auth.v1.RegisterAppRequest",
    ".clio_connect.auth.v1.ReplaceAppSecretRequest",
    ".clio_connect.auth.v1.StartAuthorizationResponse",
    ".clio_connect.auth.v1.CompleteAuthorizationRequest",
    ".clio_connect.auth.v1.LeaseAccessTokenResponse",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from("proto");
    let files = [
        "clio_connect/common/v1/common.proto",
        "clio_connect/auth/v1/auth.proto",
        "clio_connect/imports/v1/imports.proto",
        "clio_connect/audit/v1/audit.proto",
        "clio_connect/suggestions/v1/suggestions.proto",
    ];
    let descriptors = protox::compile(files, [&root])?;

    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let descriptor_path = out_dir.join("clio_connect_descriptor.bin");
    std::fs::write(
        &descriptor_path,
        prost::Message::encode_to_vec(&descriptors),
    )?;

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // No default handlers: a service that misses an RPC fails to compile instead of
        // answering UNIMPLEMENTED at run time.
        .generate_default_stubs(false)
        // Messages carrying a secret get a hand-written, redacting `Debug`
        // (src/redacted_debug.rs) instead of the derived one, which prints every field.
        .skip_debug(SECRET_BEARING)
        .compile_fds(descriptors)?;

    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
