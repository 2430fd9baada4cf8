//! What the generators need from a set of `.proto` files: their services and methods,
//! named as cellshm calls them, with their kinds and message types.

use std::collections::HashMap;

use cellshm::typed::MethodKind;
use prost_types::{DescriptorProto, EnumDescriptorProto, FieldDescriptorProto, FileDescriptorProto, FileDescriptorSet};

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
    /// The file and every file it imports, directly or not (imports first), as a
    /// serialized `google.protobuf.FileDescriptorSet` without source comments: what the
    /// generated code registers for `cellshm.Introspect.descriptors` (gRPC reflection).
    pub descriptor_set: Vec<u8>,
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
    let out: Vec<ProtoFile> =
        fds.file.iter().filter(|f| wanted(f)).map(|f| file(f, descriptor_set(fds, f.name()))).collect();
    check_ids(&out)?;
    Ok(out)
}

/// The file named `name` of `fds` and what it imports, directly or not, imports first,
/// as a serialized `FileDescriptorSet` (source comments left out: reflection serves
/// types, and the set stays small in generated code).
pub fn descriptor_set(fds: &FileDescriptorSet, name: &str) -> Vec<u8> {
    fn visit<'a>(fds: &'a FileDescriptorSet, name: &str, out: &mut Vec<&'a FileDescriptorProto>) {
        let Some(file) = fds.file.iter().find(|f| f.name() == name) else { return };
        if out.iter().any(|f| f.name() == name) {
            return;
        }
        for dependency in &file.dependency {
            visit(fds, dependency, out);
        }
        out.push(file);
    }
    let mut files = Vec::new();
    visit(fds, name, &mut files);
    let file = files.into_iter().map(|f| FileDescriptorProto { source_code_info: None, ..f.clone() }).collect();
    prost::Message::encode_to_vec(&FileDescriptorSet { file })
}

/// `bytes` as the rows of a C or C++ array initializer, 16 to a row, each row indented
/// by `indent` and ended with a comma.
pub fn c_array_rows(bytes: &[u8], indent: &str) -> String {
    bytes
        .chunks(16)
        .map(|row| format!("{indent}{},\n", row.iter().map(|b| format!("0x{b:02x}")).collect::<Vec<_>>().join(", ")))
        .collect()
}

fn file(f: &FileDescriptorProto, descriptor_set: Vec<u8>) -> ProtoFile {
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
    ProtoFile { name: f.name().to_string(), package, services, descriptor_set }
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

/// A message or enum type of a descriptor set, as the language generators refer to it.
#[derive(Clone, Debug)]
pub struct TypeInfo {
    /// The file that defines it.
    pub file: String,
    /// Its file's package, possibly empty.
    pub package: String,
    /// Its names from the outermost message down: `["Figure", "Segment"]`.
    pub path: Vec<String>,
    /// A map field's entry type: its key and value fields.
    pub map_entry: Option<(FieldDescriptorProto, FieldDescriptorProto)>,
}

/// Every message and enum of `fds`, by fully qualified name with the leading dot
/// (`.shapes.v1.Figure.Segment`), nested ones included.
pub fn types(fds: &FileDescriptorSet) -> HashMap<String, TypeInfo> {
    fn enums(map: &mut HashMap<String, TypeInfo>, owner: &TypeInfo, scope: &str, list: &[EnumDescriptorProto]) {
        for e in list {
            let mut path = owner.path.clone();
            path.push(e.name().to_string());
            map.insert(format!("{scope}.{}", e.name()), TypeInfo { path, map_entry: None, ..owner.clone() });
        }
    }
    fn messages(map: &mut HashMap<String, TypeInfo>, owner: &TypeInfo, scope: &str, list: &[DescriptorProto]) {
        for m in list {
            let fq = format!("{scope}.{}", m.name());
            let mut path = owner.path.clone();
            path.push(m.name().to_string());
            let map_entry =
                m.options.as_ref().is_some_and(|o| o.map_entry()).then(|| (m.field[0].clone(), m.field[1].clone()));
            let info = TypeInfo { path, map_entry, ..owner.clone() };
            enums(map, &info, &fq, &m.enum_type);
            messages(map, &info, &fq, &m.nested_type);
            map.insert(fq, info);
        }
    }
    let mut map = HashMap::new();
    for f in &fds.file {
        let scope = if f.package().is_empty() { String::new() } else { format!(".{}", f.package()) };
        let file = TypeInfo {
            file: f.name().to_string(),
            package: f.package().to_string(),
            path: Vec::new(),
            map_entry: None,
        };
        messages(&mut map, &file, &scope, &f.message_type);
        enums(&mut map, &file, &scope, &f.enum_type);
    }
    map
}

/// `dir/kv.proto` → `dir/kv`: what generated files are named after.
pub fn stem(file: &str) -> &str {
    file.strip_suffix(".proto").unwrap_or(file)
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
