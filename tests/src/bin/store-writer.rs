//! Child of the store crash test: performs the workload of
//! `berth_tests::store_workload` from step START on, printing
//! `ack SEQ` on stdout only after each step returned (durable), until it
//! is killed.
//!
//! Usage: `store-writer STORE_DIR RUNTIME_DIR START`. If the store cannot
//! be opened, prints the error on stderr and exits 2.

use berth_state::{ContainerId, RuntimeDir, Store};
use berth_tests::store_workload::{op, record, Op};
use std::io::Write;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let [_, store_dir, runtime_dir, start] = args.as_slice() else {
        eprintln!("usage: store-writer STORE_DIR RUNTIME_DIR START");
        return ExitCode::from(1);
    };
    let Ok(start) = start.parse::<u64>() else {
        eprintln!("store-writer: START must be a number, not {start:?}");
        return ExitCode::from(1);
    };
    let store = match RuntimeDir::open(runtime_dir)
        .map_err(berth_state::StoreError::from)
        .and_then(|rt| Store::open_with_mirror(store_dir, rt))
    {
        Ok(s) => s,
        Err(e) => {
            eprintln!("store-writer: {e}");
            return ExitCode::from(2);
        }
    };
    let mut out = std::io::stdout().lock();
    for seq in start.. {
        let res = match op(seq) {
            Op::Put { key, seq } => store.put(&record(&key, seq)),
            Op::Delete { key } => store.delete(&ContainerId::new(key)),
        };
        if let Err(e) = res {
            eprintln!("store-writer: step {seq}: {e}");
            return ExitCode::from(3);
        }
        // One write per line, flushed, so the parent never sees half an ack.
        if writeln!(out, "ack {seq}")
            .and_then(|()| out.flush())
            .is_err()
        {
            return ExitCode::from(4);
        }
    }
    ExitCode::SUCCESS
}
