//! Generates the gRPC server and client of `berth agent` from
//! state/proto/berth/api/v1/api.proto with the pure-Rust `protox` compiler
//! (no `protoc`); the model's messages are berth-state's.

fn main() {
    let proto = "../state/proto/berth/api/v1/api.proto";
    println!("cargo:rerun-if-changed={proto}");
    println!("cargo:rerun-if-changed=../state/proto/berth/v1/model.proto");
    let fds = protox::compile([proto], ["../state/proto"]).expect("compile berth api proto");
    tonic_prost_build::configure()
        .extern_path(".berth.v1", "::berth_state::model")
        .btree_map(".")
        .compile_fds(fds)
        .expect("generate the berth api");
}
