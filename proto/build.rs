// protox compiles the .proto files in pure Rust, so building needs no system protoc.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = ["paddock/agent/v1/agent.proto"];
    println!("cargo:rerun-if-changed=paddock");
    let descriptors = protox::compile(files, ["."])?;
    tonic_prost_build::configure().compile_fds(descriptors)?;
    Ok(())
}
