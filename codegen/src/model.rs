//! What the generators need from a set of `.proto` files: their services and methods,
//! named as cellshm calls them, with their kinds and message types.

use std::collections::HashMap;

use cellshm::typed::MethodKind;
use prost_types::{FileDescriptorProto, FileDescriptorSet};

use crate::Error;

/// One `.proto` file to generate code for.
#[derive(Clone, Debug)]
pub struct ProtoFile {
    /// Its name as given to the compiler (`kv.proto`, `dir/a.proto`).
    pub name: String,
    /// Its package, possibly empty.
    pub package: String,
    /// Its services, in declaration order.
    pub services: Vec<Service>,
}

/// One service.
#[derive(Clone, Debug)]
pub struct Service {
    /// The name in the `.proto` file (`Store`).
    pub name: String,
    /// The package-qualified name (`kv.Store`), the prefix of its cellshm methods.
    pub full_name: String,
    /// Its methods, in declaration order.
    pub methods: Vec<Method>,
}

/// One method.
#[derive(Clone, Debug)]
pub struct Method {
    /// The name in the `.proto` file (`Get`).
    pub name: String,
    /// The cellshm method name: `pkg.Svc/Method` becomes `pkg.Svc.Method`.
    pub cellshm_name: String,
    /// `cellshm::method_id(cellshm_name)`.
    pub id: u32,
    /// How it is called.
    pub kind: MethodKind,
    /// The request's fully qualified message type, without the leading dot.
    pub input: String,
    /// The response's.
    pub output: String,
}

/// The services of the files in `fds` named by `files` (all of them when empty), after
/// refusing two method names with one id: cellshm dispatches by id, so such a pair
/// would run one method's handler for the other's calls.
pub fn services(fds: &FileDescriptorSet, files: &[String]) -> Result<Vec<ProtoFile>, Error> {
    let wanted = |f: &FileDescriptorProto| files.is_empty() || files.iter().any(|n| n == f.name());
    let out: Vec<ProtoFile> = fds.file.iter().filter(|f| wanted(f)).map(file).collect();
    check_ids(&out)?;
    Ok(out)
}

fn file(f: &FileDescriptorProto) -> ProtoFile {
    let package = f.package().to_string();
    let services = f
        .service
        .iter()
        .map(|s| {
            let full_name = qualified(&package, s.name());
            let methods = s
                .method
                .iter()
                .map(|m| {
                    let cellshm_name = format!("{full_name}.{}", m.name());
                    Method {
                        name: m.name().to_string(),
                        id: cellshm::method_id(&cellshm_name),
                        cellshm_name,
                        kind: MethodKind::of(m.client_streaming(), m.server_streaming()),
                        input: m.input_type().trim_start_matches('.').to_string(),
                        output: m.output_type().trim_start_matches('.').to_string(),
                    }
                })
                .collect();
            Service { name: s.name().to_string(), full_name, methods }
        })
        .collect();
    ProtoFile { name: f.name().to_string(), package, services }
}

fn qualified(package: &str, name: &str) -> String {
    if package.is_empty() {
        name.to_string()
    } else {
        format!("{package}.{name}")
    }
}

fn check_ids(files: &[ProtoFile]) -> Result<(), Error> {
    let mut seen: HashMap<u32, &str> = HashMap::new();
    for m in files.iter().flat_map(|f| &f.services).flat_map(|s| &s.methods) {
        match seen.insert(m.id, &m.cellshm_name) {
            Some(other) if other != m.cellshm_name => {
                return Err(Error(format!(
                    "methods {other:?} and {:?} have the same cellshm id {:#010x}: rename one of them",
                    m.cellshm_name, m.id
                )))
            }
            _ => {}
        }
    }
    Ok(())
}

/// `CamelCase` or `mixedCase` to `snake_case` (what Python and Rust method names use).
pub fn snake_case(name: &str) -> String {
    let mut out = String::new();
    let chars: Vec<char> = name.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        if c.is_uppercase() {
            let after_lower = i > 0 && (chars[i - 1].is_lowercase() || chars[i - 1].is_ascii_digit());
            let before_lower =
                i > 0 && chars.get(i + 1).is_some_and(|n| n.is_lowercase()) && chars[i - 1].is_uppercase();
            if after_lower || before_lower {
                out.push('_');
            }
            out.extend(c.to_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// `snake_case` or `mixedCase` upper-cased for C macros, non-identifier characters as `_`.
pub fn macro_case(name: &str) -> String {
    snake_case(name).chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_uppercase() } else { '_' }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_convert_like_protoc_plugins_do() {
        assert_eq!(snake_case("Get"), "get");
        assert_eq!(snake_case("GetHTTPStatus"), "get_http_status");
        assert_eq!(snake_case("uploadV2Chunks"), "upload_v2_chunks");
        assert_eq!(macro_case("kv.Store"), "KV_STORE");
    }
}
