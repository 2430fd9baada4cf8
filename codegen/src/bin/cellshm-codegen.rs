//! `cellshm-codegen --lang rust|c|cpp|python --out DIR [-I DIR]... FILE.proto...`

use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str = "usage: cellshm-codegen --lang rust|c|cpp|python --out DIR [-I DIR]... FILE.proto...

Generates typed cellshm stubs from .proto files (compiled by protox: no protoc needed).
  --lang rust   prost messages and, per service, a client, a handler trait and serve_<svc>
  --lang c      a header per file: each method's name, id and kind
  --lang cpp    per file with services NAME.cellshm.hpp: typed clients, servicers,
                serve_<svc> over protobuf's C++ messages (NAME.pb.h from protoc --cpp_out)
  --lang python per file NAME_pb2.py/.pyi (protobuf messages) and NAME_cellshm.py
                (typed clients, servicers, serve_<svc>)
  --out DIR     where the files go (made if missing)
  -I DIR        where to look for the files and their imports (default: .)
Exit codes: 0 generated, 1 the .proto files do not compile or clash, 2 bad arguments.";

fn main() -> ExitCode {
    match run(std::env::args().skip(1).collect()) {
        Ok(()) => ExitCode::SUCCESS,
        Err((code, message)) => {
            eprintln!("cellshm-codegen: {message}");
            if code == 2 {
                eprintln!("{USAGE}");
            }
            ExitCode::from(code)
        }
    }
}

fn run(args: Vec<String>) -> Result<(), (u8, String)> {
    let (mut lang, mut out, mut includes, mut files) = (None, None, Vec::new(), Vec::new());
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let mut value = |flag: &str| args.next().ok_or((2, format!("{flag} needs a value")));
        match arg.as_str() {
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            "--version" => {
                println!("cellshm-codegen {}", env!("CARGO_PKG_VERSION"));
                return Ok(());
            }
            "--lang" => lang = Some(cellshm_codegen::Lang::parse(&value("--lang")?).map_err(|e| (2, e.0))?),
            "--out" => out = Some(PathBuf::from(value("--out")?)),
            "-I" | "--proto_path" => includes.push(PathBuf::from(value(&arg)?)),
            flag if flag.starts_with("-I") => includes.push(PathBuf::from(&flag[2..])),
            flag if flag.starts_with('-') => return Err((2, format!("unknown flag {flag}"))),
            file => files.push(PathBuf::from(file)),
        }
    }
    let lang = lang.ok_or((2, "--lang is required".to_string()))?;
    let out = out.ok_or((2, "--out is required".to_string()))?;
    if files.is_empty() {
        return Err((2, "no .proto files given".to_string()));
    }
    if includes.is_empty() {
        includes.push(PathBuf::from("."));
    }
    let fds = cellshm_codegen::parse(&files, &includes).map_err(|e| (1, e.0))?;
    let names = cellshm_codegen::file_names(&fds, &files, &includes);
    let generated = cellshm_codegen::generate(lang, &fds, &names).map_err(|e| (1, e.0))?;
    cellshm_codegen::write(&out, &generated).map_err(|e| (1, e.to_string()))?;
    Ok(())
}
