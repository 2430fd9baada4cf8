//! Every Rust example runs and does what it says.

use std::process::Command;

#[test]
fn echo_host_spawns_the_echo_cell_calls_it_and_shuts_it_down() {
    let out = Command::new(env!("CARGO_BIN_EXE_echo-host")).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "echo-host failed: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("echo-0: Echo.echo -> \"hello from the Rust host\""), "{stdout}");
    assert!(stdout.contains("echo-0: exited (exit status: 0)"), "{stdout}");
}

#[test]
fn echo_host_runs_several_cells_on_one_hub() {
    let cell = env!("CARGO_BIN_EXE_echo-cell");
    let out = Command::new(env!("CARGO_BIN_EXE_echo-host")).args(["--", cell, "--", cell]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("echo-0: ready") && stdout.contains("echo-1: ready"), "{stdout}");
}

#[test]
fn echo_cell_started_by_hand_explains_what_is_missing() {
    let out = Command::new(env!("CARGO_BIN_EXE_echo-cell")).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("CELLSHM_DOORBELL_FD is not set"), "{stderr}");
}

#[test]
fn async_host_calls_streams_cancels_and_shuts_down_the_async_cell() {
    let out = Command::new(env!("CARGO_BIN_EXE_async-host")).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "async-host failed: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("1000 lookups, the last: \"value of k999\""), "{stdout}");
    assert!(stdout.contains("Feed.numbers: 100 items, sum 4950"), "{stdout}");
    assert!(stdout.contains("Feed.total: 5000"), "{stdout}");
    assert!(stdout.contains("feed: exited (exit status: 0)"), "{stdout}");
}
