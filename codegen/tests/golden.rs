//! Golden tests of the generator: each case's output is compared with the files under
//! `tests/golden/CASE/LANG/`. After a deliberate change, regenerate them with
//! `CELLSHM_UPDATE_GOLDEN=1 cargo test -p cellshm-codegen --test golden` and review the diff.
//! The C headers are also compiled, as C99 and C++17 with warnings as errors (the C++
//! ones are compiled by CMake against protobuf, `make test-c`).

use std::path::PathBuf;
use std::process::Command;

use cellshm_codegen::{generate, parse, Lang};

const CASES: &[(&str, &[&str], &str)] = &[
    ("kv", &["kv.proto"], "../examples/proto"),
    ("shapes", &["shapes/drawing.proto", "shapes/common.proto"], "tests/protos"),
    ("plain", &["plain.proto"], "tests/protos"),
    ("wkt", &["wkt/inventory.proto"], "tests/protos"),
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn outputs(lang: Lang, files: &[&str], include: &str) -> Vec<cellshm_codegen::GeneratedFile> {
    let include = root().join(include);
    let paths: Vec<PathBuf> = files.iter().map(|f| include.join(f)).collect();
    let fds = parse(&paths, &[&include]).unwrap();
    let names: Vec<String> = files.iter().map(|f| f.to_string()).collect();
    generate(lang, &fds, &names).unwrap()
}

#[test]
fn generated_files_match_the_golden_ones() {
    let update = std::env::var_os("CELLSHM_UPDATE_GOLDEN").is_some();
    let mut stale = Vec::new();
    for (case, files, include) in CASES {
        for (lang, dir) in [(Lang::Rust, "rust"), (Lang::C, "c"), (Lang::Cpp, "cpp"), (Lang::Python, "python")] {
            let golden = root().join("tests/golden").join(case).join(dir);
            for f in outputs(lang, files, include) {
                let path = golden.join(&f.name);
                if update {
                    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                    std::fs::write(&path, &f.content).unwrap();
                } else if std::fs::read_to_string(&path).ok().as_deref() != Some(f.content.as_str()) {
                    stale.push(path.display().to_string());
                }
            }
        }
    }
    assert!(
        stale.is_empty(),
        "generated output differs from (or lacks) the golden files: {stale:?}; see this file's comment"
    );
}

#[test]
fn c_headers_compile_as_c99_and_cpp17_and_carry_the_right_ids() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("golden-c");
    std::fs::create_dir_all(&dir).unwrap();
    let mut includes = String::new();
    for (_, files, include) in CASES {
        for f in outputs(Lang::C, files, include) {
            let path = dir.join(&f.name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &f.content).unwrap();
            includes.push_str(&format!("#include \"{}\"\n#include \"{}\"\n", f.name, f.name));
        }
    }
    let get_id = cellshm::method_id("kv.Store.Get");
    let source = format!(
        "{includes}\nint main(void) {{\n  return KV_STORE_GET_ID == {get_id}u && KV_STORE_METHODS[4].kind == CELLSHM_METHOD_BIDI \
         && PLAIN_GET_HTTP_STATUS_ID != 0 && SHAPES_V1_DRAWING_METHOD_COUNT == 4 && SHAPES_V1_EMPTY_METHOD_COUNT == 0 ? 0 : 1;\n}}\n"
    );
    std::fs::write(dir.join("check.c"), &source).unwrap();
    std::fs::write(dir.join("check.cpp"), &source).unwrap();
    for (compiler, std, file) in [("cc", "-std=c99", "check.c"), ("c++", "-std=c++17", "check.cpp")] {
        let exe = dir.join(format!("{file}.out"));
        let status = Command::new(compiler)
            .args([std, "-Wall", "-Wextra", "-Werror", "-pedantic", "-I"])
            .arg(root().join("../include"))
            .arg("-o")
            .arg(&exe)
            .arg(dir.join(file))
            .status()
            .unwrap_or_else(|e| panic!("running {compiler}: {e}"));
        assert!(status.success(), "{compiler} {std} failed on the generated headers");
        assert!(Command::new(&exe).status().unwrap().success(), "{file}: the ids or kinds are wrong");
    }
}

#[test]
fn two_method_names_with_one_id_are_refused_with_both_names() {
    // "Svc.m79518" and "Svc.m67915" hash to the same id (0x66c0a660).
    assert_eq!(cellshm::method_id("Svc.m79518"), cellshm::method_id("Svc.m67915"));
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("collision");
    std::fs::create_dir_all(&dir).unwrap();
    let proto = "syntax = \"proto3\";\nmessage M {}\nservice Svc {\n  rpc m79518(M) returns (M);\n  rpc m67915(M) returns (M);\n}\n";
    std::fs::write(dir.join("clash.proto"), proto).unwrap();
    let fds = parse(&[dir.join("clash.proto")], &[&dir]).unwrap();
    for lang in [Lang::Rust, Lang::C, Lang::Cpp, Lang::Python] {
        let e = generate(lang, &fds, &["clash.proto".to_string()]).unwrap_err();
        assert!(e.0.contains("Svc.m79518") && e.0.contains("Svc.m67915") && e.0.contains("0x66c0a660"), "{e}");
    }
}

#[test]
fn a_proto_that_does_not_compile_says_where() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("broken");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("broken.proto"), "syntax = \"proto3\";\nmessage M { strin name = 1; }\n").unwrap();
    let e = parse(&[dir.join("broken.proto")], &[&dir]).unwrap_err();
    assert!(e.0.contains("broken.proto"), "{e}");
}
