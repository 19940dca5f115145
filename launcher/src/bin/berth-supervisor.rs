//! `berth-supervisor`: the per-container supervisor that berth's launchers
//! exec (see `berth_launcher::supervisor`). Not meant to be run by hand.

fn main() {
    berth_launcher::supervisor::main()
}
