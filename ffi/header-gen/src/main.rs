//! Writes `include/cellshm.h` from `ffi/src` with cbindgen, or with `--check`
//! fails if the committed header differs from what would be generated.

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let crate_dir = root.join("ffi");
    let header = root.join("include/cellshm.h");
    let config = match cbindgen::Config::from_file(crate_dir.join("cbindgen.toml")) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("header-gen: reading ffi/cbindgen.toml: {e}");
            return ExitCode::FAILURE;
        }
    };
    let bindings = match cbindgen::Builder::new().with_crate(&crate_dir).with_config(config).generate() {
        Ok(b) => b,
        Err(e) => {
            eprintln!("header-gen: cbindgen failed: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut fresh = Vec::new();
    bindings.write(&mut fresh);
    if std::env::args().any(|a| a == "--check") {
        let committed = std::fs::read(&header).unwrap_or_default();
        if committed != fresh {
            eprintln!("header-gen: include/cellshm.h is out of date with ffi/src; run `make header` and commit it");
            return ExitCode::FAILURE;
        }
        println!("include/cellshm.h is up to date");
        return ExitCode::SUCCESS;
    }
    if let Err(e) = std::fs::create_dir_all(root.join("include")).and_then(|_| std::fs::write(&header, &fresh)) {
        eprintln!("header-gen: writing {}: {e}", header.display());
        return ExitCode::FAILURE;
    }
    println!("wrote {}", header.display());
    ExitCode::SUCCESS
}
