//! Writes `include/cellshm.h` from `ffi/src` with cbindgen, and from it
//! `include/cellshm_cffi.h`, the same declarations as Python's cffi `cdef` parses them;
//! with `--check`, fails if a committed header differs from what would be generated.

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
    let cffi = match std::str::from_utf8(&fresh).map_err(|e| e.to_string()).and_then(cffi_header) {
        Ok(h) => h.into_bytes(),
        Err(e) => {
            eprintln!("header-gen: making the cffi header: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outputs = [(header, fresh), (root.join("include/cellshm_cffi.h"), cffi)];
    if std::env::args().any(|a| a == "--check") {
        for (path, fresh) in &outputs {
            let committed = std::fs::read(path).unwrap_or_default();
            if &committed != fresh {
                eprintln!(
                    "header-gen: {} is out of date with ffi/src; run `make header` and commit it",
                    path.display()
                );
                return ExitCode::FAILURE;
            }
        }
        println!("include/cellshm.h and include/cellshm_cffi.h are up to date");
        return ExitCode::SUCCESS;
    }
    for (path, fresh) in &outputs {
        if let Err(e) = std::fs::create_dir_all(root.join("include")).and_then(|_| std::fs::write(path, fresh)) {
            eprintln!("header-gen: writing {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
        println!("wrote {}", path.display());
    }
    ExitCode::SUCCESS
}

/// The C header as cffi's `cdef` takes it: no preprocessor but `#define NAME integer`
/// (a limit macro becomes its number), the C17 branch of every conditional (enums
/// without a fixed base type, their typedefs to uint32_t), no comments.
fn cffi_header(c: &str) -> Result<String, String> {
    let mut out = String::from(
        "/* cellshm_cffi.h: the declarations of cellshm.h as Python's cffi parses them\n \
         * (ffi.cdef(open(\"cellshm_cffi.h\").read()); ffi.dlopen(\"libcellshm.so.0\")).\n \
         * Generated from cellshm.h by ffi/header-gen; do not edit by hand. The documentation\n \
         * is in cellshm.h. */\n",
    );
    // For each open conditional: whether its lines are kept, and whether its #else is.
    let mut open: Vec<(bool, bool)> = Vec::new();
    let mut in_block_comment = false;
    for line in c.lines() {
        let trimmed = line.trim();
        if in_block_comment {
            in_block_comment = !trimmed.contains("*/");
            continue;
        }
        if trimmed.starts_with("/*") {
            in_block_comment = !trimmed.contains("*/");
            continue;
        }
        let keeping = open.iter().all(|(keep, _)| *keep);
        if let Some(directive) = trimmed.strip_prefix('#') {
            let directive = directive.split("//").next().unwrap_or("").trim();
            let (word, rest) = directive.split_once(' ').unwrap_or((directive, ""));
            match word {
                "ifndef" | "ifdef" | "if" => {
                    let kept = match (word, rest.trim()) {
                        ("ifndef", "CELLSHM_H") => true,
                        ("ifndef", "__cplusplus") => true,
                        ("ifdef", "__cplusplus") => false,
                        ("if", "defined(__cplusplus) || __STDC_VERSION__ >= 202311L") => false,
                        ("if", "__STDC_VERSION__ >= 202311L") => false,
                        (w, r) => return Err(format!("a conditional it does not know: #{w} {r}")),
                    };
                    open.push((kept, !kept));
                }
                "else" => {
                    let top = open.last_mut().ok_or("#else without #if")?;
                    *top = (top.1, false);
                }
                "endif" => {
                    open.pop().ok_or("#endif without #if")?;
                }
                "include" => {}
                "define" if keeping => {
                    let mut parts = rest.split_whitespace();
                    let (name, value) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
                    let value = match value {
                        "UINT32_MAX" => u32::MAX.to_string(),
                        "UINT64_MAX" => u64::MAX.to_string(),
                        v if v.parse::<u64>().is_ok() => v.to_string(),
                        "" if name == "CELLSHM_H" => continue,
                        v => return Err(format!("#define {name} {v}: not an integer cffi can take")),
                    };
                    out.push_str(&format!("#define {name} {value}\n"));
                }
                "define" => {}
                w => return Err(format!("a directive it does not know: #{w}")),
            }
            continue;
        }
        if !keeping || trimmed.starts_with("//") || trimmed.starts_with("extern \"C\"") {
            continue;
        }
        let code = line.split("//").next().unwrap_or("").trim_end();
        if !code.trim().is_empty() {
            out.push_str(code);
            out.push('\n');
        }
    }
    if !open.is_empty() {
        return Err("a conditional is not closed".into());
    }
    Ok(out)
}
