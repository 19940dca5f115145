//! Generates the gRPC server and client of `berth agent` from
//! state/proto/berth/api/v1/api.proto with the pure-Rust `protox` compiler
//! (no `protoc`); the model's messages are berth-state's. Also Kubernetes's
//! CRI (`runtime.v1`, vendored from k8s.io/cri-api under
//! state/proto/k8s/cri/v1) for `berth agent --cri-socket`.

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

    let cri = "../state/proto/k8s/cri/v1/api.proto";
    println!("cargo:rerun-if-changed={cri}");
    let fds = protox::compile([cri], ["../state/proto"]).expect("compile the CRI proto");
    tonic_prost_build::configure()
        .compile_fds(fds)
        .expect("generate the CRI api");
    // The CRI server's checkpoint records, which embed the CRI's configs.
    let records = "../state/proto/berth/cri/v1/records.proto";
    println!("cargo:rerun-if-changed={records}");
    let fds = protox::compile([records], ["../state/proto"]).expect("compile the CRI records");
    tonic_prost_build::configure()
        .build_server(false)
        .build_client(false)
        .extern_path(".berth.v1", "::berth_state::model")
        .extern_path(".runtime.v1", "crate::cri::api")
        .compile_fds(fds)
        .expect("generate the CRI records");
}
