//! The benchmark runs and reports every case it promises, in the JSON shape BENCHMARKS.md
//! documents. Nothing here judges a number: speed is for the benchmark itself to show.

use std::process::Command;

const CASES: &[&str] = &[
    "floor_shm_spin_64B",
    "floor_socketpair_64B",
    "floor_memcpy_64KiB",
    "floor_memcpy_1MiB",
    "cellshm_16B_spin",
    "cellshm_64B_spin",
    "cellshm_64B_adaptive",
    "cellshm_64B_async_tokio",
    "cellshm_64B_async_tokio_concurrent",
    "cellshm_64B_block",
    "cellshm_1MiB_spin",
    "iceoryx2_rr_64B",
    "grpc_uds_64B",
    "grpc_tcp_64B",
    "grpc_gateway_tcp_64B",
    "grpc_gateway_uds_64B",
    "grpc_gateway_tcp_64B_adaptive",
    "grpc_stream_64KiB",
    "grpc_gateway_stream_64KiB",
    "cellshm_stream_64KiB",
    "cellshm_stream_1MiB",
    "cellshm_8_streams_256KiB",
    "cellshm_unary_during_8_streams",
];

/// The number after `"key":` in `text`, from `at` on.
fn number_after(text: &str, at: usize, key: &str) -> Option<f64> {
    let rest = &text[at..];
    let start = rest.find(&format!("\"{key}\":"))? + key.len() + 3;
    let digits: String = rest[start..].chars().take_while(|c| c.is_ascii_digit() || *c == '.').collect();
    digits.parse().ok()
}

#[test]
fn a_quick_run_reports_every_case_as_one_json_object() {
    let out = Command::new(env!("CARGO_BIN_EXE_cellshm-bench")).args(["--quick", "--json"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let text = text.trim();
    assert_eq!(text.lines().count(), 1, "one object: {text}");
    assert!(text.starts_with("{\"cases\":{") && text.ends_with("}}"), "{text}");
    for case in CASES {
        let at = text.find(&format!("\"{case}\":{{")).unwrap_or_else(|| panic!("{case} missing from {text}"));
        let value = if case.starts_with("floor_memcpy") || case.contains("stream_") || case.contains("8_streams_") {
            number_after(text, at, "gbps")
        } else if case.ends_with("_concurrent") {
            number_after(text, at, "calls_per_s")
        } else {
            let p50 = number_after(text, at, "p50_ns");
            let p99 = number_after(text, at, "p99_ns");
            assert!(p50.zip(p99).is_some_and(|(a, b)| a <= b), "{case}: p50 above p99 in {text}");
            p50
        };
        assert!(value.is_some_and(|v| v > 0.0), "{case} has no positive figure in {text}");
    }
}

#[test]
fn a_bad_argument_is_a_usage_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_cellshm-bench")).arg("--fast").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("usage: cellshm-bench"));
}
