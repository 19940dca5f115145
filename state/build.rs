//! Compiles the data model with the pure-Rust `protox` compiler, so building
//! berth never needs `protoc` on the machine.

fn main() {
    let protos = [
        "proto/berth/v1/model.proto",
        "proto/berth/v1/launch.proto",
        "proto/berth/v1/criu.proto",
    ];
    for p in &protos {
        println!("cargo:rerun-if-changed={p}");
    }
    let fds = protox::compile(protos, ["proto"]).expect("compile berth protos");
    let mut config = prost_build::Config::new();
    config.btree_map(["."]);
    config
        .compile_fds(fds)
        .expect("generate Rust code for berth protos");
}
