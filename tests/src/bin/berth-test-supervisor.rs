//! The launcher's supervisor, built as part of this package so that
//! `cargo test -p berth-tests` always runs against a fresh one (cargo does
//! not build a dependency's binaries). Tests point
//! `LauncherConfig::supervisor` at `CARGO_BIN_EXE_berth-test-supervisor`.

fn main() {
    berth_launcher::supervisor::main()
}
