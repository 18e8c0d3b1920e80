//! Generates the kubelet device plugin API (`proto/api.proto`, package `v1beta1`) with
//! tonic/prost: both the server side (our plugins) and the client side (registration with
//! the kubelet, and the test kubelet dialling our plugins).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/api.proto");
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_protos(&["proto/api.proto"], &["proto"])?;
    Ok(())
}
