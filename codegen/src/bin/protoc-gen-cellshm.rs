//! `protoc-gen-cellshm`: cellshm-codegen as a protoc plugin.
//!
//! `protoc --plugin=protoc-gen-cellshm --cellshm_out=lang=c:DIR kv.proto` (or
//! `lang=rust`, or `lang=python` for the `_cellshm.py` modules beside protoc's own
//! `--python_out`/`--pyi_out`; `c` is the default). Reads a `CodeGeneratorRequest` on
//! stdin, writes a `CodeGeneratorResponse` on stdout.

use std::io::{Read, Write};
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut input = Vec::new();
    if let Err(e) = std::io::stdin().read_to_end(&mut input) {
        eprintln!("protoc-gen-cellshm: reading the request: {e}");
        return ExitCode::from(1);
    }
    let response = match cellshm_codegen::plugin::respond(&input) {
        Ok(response) => response,
        Err(e) => {
            eprintln!("protoc-gen-cellshm: {e}");
            return ExitCode::from(1);
        }
    };
    if let Err(e) = std::io::stdout().write_all(&response) {
        eprintln!("protoc-gen-cellshm: writing the response: {e}");
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}
