//! `cellshm-codegen`: typed cellshm services from `.proto` files.
//!
//! A service method `pkg.Svc/Method` is the cellshm method `"pkg.Svc.Method"`. Unary,
//! server-streaming, client-streaming and bidi methods map onto cellshm's calls and
//! streams (see `cellshm::typed`); deadlines, cancellation and statuses are cellshm's.
//! The `.proto` files are compiled by [`protox`], so no `protoc` is needed.
//!
//! In a build script, like `tonic-build`:
//!
//! ```no_run
//! // build.rs
//! cellshm_codegen::compile_protos(&["proto/kv.proto"], &["proto"]).unwrap();
//! ```
//! then `cellshm::include_proto!("kv");` (`include!` of `OUT_DIR/kv.rs`: one file per
//! package, named after it with its dots, `_.rs` without one) gives the prost messages of
//! package `kv`, and per service `Svc`: a client `SvcClient`, a trait `Svc` for the
//! handlers and `serve_svc(&cell_or_hub, impl Svc)`. The well-known types are
//! `prost_types`' (wrappers map to Rust's own types, `Empty` to `()`), as in tonic-build.
//!
//! From the command line: `cellshm-codegen --lang rust|c|cpp|python --out DIR [-I DIR]...
//! FILE.proto...`, or as the protoc plugin `protoc-gen-cellshm`.

use std::fmt;
use std::path::{Path, PathBuf};

use prost_types::FileDescriptorSet;

pub mod c;
pub mod cpp;
pub mod model;
pub mod plugin;
pub mod python;
pub mod rust;

/// What went wrong, said for a person: a `.proto` that does not compile, a name clash,
/// an output that cannot be written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Error(pub String);

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

impl From<Error> for std::io::Error {
    fn from(e: Error) -> std::io::Error {
        std::io::Error::other(e.0)
    }
}

/// The languages stubs are generated for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lang {
    /// prost messages and, per service, a client, a handler trait and its registration.
    Rust,
    /// A header per `.proto` file with each method's name, id and kind.
    C,
    /// Per file with services `NAME.cellshm.hpp`: typed clients, servicers and
    /// `serve_<svc>` over protobuf's C++ messages (`NAME.pb.h` from protoc).
    Cpp,
    /// Per file `_pb2.py`/`_pb2.pyi` (protobuf's messages) and, with services,
    /// `_cellshm.py` (typed clients, servicers, `serve_<svc>`).
    Python,
    /// [`Lang::Python`] without the `_pb2` modules: for protoc, whose `--python_out` and
    /// `--pyi_out` write those.
    PythonServices,
}

impl Lang {
    /// `rust`, `c`, `cpp` or `python`.
    pub fn parse(name: &str) -> Result<Lang, Error> {
        match name {
            "rust" => Ok(Lang::Rust),
            "c" => Ok(Lang::C),
            "cpp" => Ok(Lang::Cpp),
            "python" => Ok(Lang::Python),
            other => Err(Error(format!("unknown language {other:?}: expected rust, c, cpp or python"))),
        }
    }
}

/// One generated file: a path relative to the output directory, and its text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GeneratedFile {
    /// Where it goes, relative to the output directory.
    pub name: String,
    /// What it holds.
    pub content: String,
}

/// Compiles `protos` (found in `includes`) into a descriptor set, imports included.
pub fn parse(protos: &[impl AsRef<Path>], includes: &[impl AsRef<Path>]) -> Result<FileDescriptorSet, Error> {
    for p in protos {
        let p = p.as_ref();
        // A name relative to an include directory is fine too (as protoc takes them).
        if !p.exists() && !includes.iter().any(|i| i.as_ref().join(p).exists()) {
            return Err(Error(format!("{}: no such file", p.display())));
        }
    }
    protox::compile(protos, includes).map_err(|e| Error(format!("{e:?}")))
}

/// The stubs for `lang` of the files of `fds` named in `files` (the files given on the
/// command line; their imports are only referred to).
pub fn generate(lang: Lang, fds: &FileDescriptorSet, files: &[String]) -> Result<Vec<GeneratedFile>, Error> {
    let protos = model::services(fds, files)?;
    match lang {
        Lang::C => Ok(protos.iter().map(c::header).collect()),
        Lang::Cpp => cpp::generate(fds, &protos),
        // Every package of the set but the well-known types': the files given refer to them.
        Lang::Rust => rust::generate(fds),
        Lang::Python => python::generate(fds, &protos, python::Output::All),
        Lang::PythonServices => python::generate(fds, &protos, python::Output::ServicesOnly),
    }
}

/// The names the compiler gave `protos` (relative to the include directory that holds
/// each), which is how a descriptor set names its files.
pub fn file_names(fds: &FileDescriptorSet, protos: &[impl AsRef<Path>], includes: &[impl AsRef<Path>]) -> Vec<String> {
    protos
        .iter()
        .map(|p| {
            let p = p.as_ref();
            let relative = includes
                .iter()
                .find_map(|i| p.strip_prefix(i.as_ref()).ok())
                .or_else(|| fds.file.iter().any(|f| Path::new(f.name()) == p).then_some(p))
                .unwrap_or(p);
            relative.to_string_lossy().replace('\\', "/")
        })
        .collect()
}

/// A build script's code generation: prost messages and cellshm services for `protos`,
/// written to `OUT_DIR` (or [`Builder::out_dir`]).
#[derive(Clone, Debug, Default)]
pub struct Builder {
    out_dir: Option<PathBuf>,
}

impl Builder {
    /// Writes to `OUT_DIR` unless told otherwise.
    pub fn new() -> Builder {
        Builder::default()
    }

    /// Where the `.rs` files go.
    pub fn out_dir(mut self, dir: impl Into<PathBuf>) -> Builder {
        self.out_dir = Some(dir.into());
        self
    }

    /// Compiles `protos`, looking for them and their imports in `includes`, and writes
    /// one `.rs` file per package. In a build script it also tells cargo to rerun when
    /// a `.proto` changes.
    pub fn compile(&self, protos: &[impl AsRef<Path>], includes: &[impl AsRef<Path>]) -> std::io::Result<()> {
        let fds = parse(protos, includes)?;
        let files = file_names(&fds, protos, includes);
        let out_dir = match &self.out_dir {
            Some(dir) => dir.clone(),
            None => std::env::var_os("OUT_DIR").map(PathBuf::from).ok_or_else(|| {
                std::io::Error::other("OUT_DIR is not set: call this from a build script, or set out_dir")
            })?,
        };
        if std::env::var_os("CARGO").is_some() {
            for p in protos {
                println!("cargo:rerun-if-changed={}", p.as_ref().display());
            }
        }
        write(&out_dir, &generate(Lang::Rust, &fds, &files)?)
    }
}

/// [`Builder::compile`] with the defaults: in a build script, into `OUT_DIR`.
pub fn compile_protos(protos: &[impl AsRef<Path>], includes: &[impl AsRef<Path>]) -> std::io::Result<()> {
    Builder::new().compile(protos, includes)
}

/// Writes generated files under `dir`, making directories as needed.
pub fn write(dir: &Path, files: &[GeneratedFile]) -> std::io::Result<()> {
    for f in files {
        let path = dir.join(&f.name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&path, &f.content)
            .map_err(|e| std::io::Error::new(e.kind(), format!("writing {}: {e}", path.display())))?;
    }
    Ok(())
}
