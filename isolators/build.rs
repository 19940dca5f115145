//! Generates the client (the agent's) and the server (for plugins written
//! in Rust, and the bench's no-op plugin) of the isolator plugin protocol
//! (state/proto/berth/plugin/v1/isolator.proto) with the pure-Rust `protox`
//! compiler (no `protoc`); the model's messages are berth-state's.

fn main() {
    let proto = "../state/proto/berth/plugin/v1/isolator.proto";
    println!("cargo:rerun-if-changed={proto}");
    println!("cargo:rerun-if-changed=../state/proto/berth/v1/model.proto");
    let fds = protox::compile([proto], ["../state/proto"]).expect("compile the plugin proto");
    tonic_prost_build::configure()
        .extern_path(".berth.v1", "::berth_state::model")
        .btree_map(".")
        .compile_fds(fds)
        .expect("generate the plugin protocol");
}
