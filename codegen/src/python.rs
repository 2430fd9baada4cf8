//! The Python output, per `.proto` file: `NAME_pb2.py` and `NAME_pb2.pyi` (protobuf's
//! messages, as protoc's `--python_out` and `--pyi_out` would write them, so no protoc
//! is needed), and for a file with services `NAME_cellshm.py`: per service a typed
//! client (sync and `async` methods, stream iterators), a servicer base class, and
//! `serve_<svc>(cell_or_hub, servicer)`, over `cellshm.typed`.

use std::collections::HashMap;
use std::fmt::Write;

use cellshm::typed::MethodKind;
use prost::Message;
use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{DescriptorProto, EnumDescriptorProto, FieldDescriptorProto, FileDescriptorProto, FileDescriptorSet};

use crate::model::{snake_case, ProtoFile};
use crate::{Error, GeneratedFile};

/// What to write: everything, or only the cellshm modules (when protoc writes `_pb2`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    /// `_pb2.py`, `_pb2.pyi` and `_cellshm.py`.
    All,
    /// `_cellshm.py` only.
    ServicesOnly,
}

/// Python's keywords: a field or method named so is not an identifier there.
const KEYWORDS: &[&str] = &[
    "False", "None", "True", "and", "as", "assert", "async", "await", "break", "class", "continue", "def", "del",
    "elif", "else", "except", "finally", "for", "from", "global", "if", "import", "in", "is", "lambda", "nonlocal",
    "not", "or", "pass", "raise", "return", "try", "while", "with", "yield",
];

fn is_keyword(name: &str) -> bool {
    KEYWORDS.contains(&name)
}

/// `shapes/drawing.proto` → `shapes.drawing_pb2` (protoc's module name).
fn module_name(file: &str, suffix: &str) -> String {
    let stem = file.strip_suffix(".proto").unwrap_or(file);
    format!("{}{suffix}", stem.replace('-', "_").replace('/', "."))
}

/// What a module is imported as (protoc's alias: `shapes.common_pb2` →
/// `shapes_dot_common__pb2`).
fn alias(module: &str) -> String {
    module.replace('_', "__").replace('.', "_dot_")
}

/// `import kv_pb2 as kv__pb2`, or `from shapes import common_pb2 as ...`.
fn import_line(module: &str) -> String {
    match module.rsplit_once('.') {
        Some((package, name)) => format!("from {package} import {name} as {}", alias(module)),
        None => format!("import {module} as {}", alias(module)),
    }
}

/// A message or enum type, by its fully qualified name (with the leading dot).
#[derive(Clone, Debug)]
struct TypeRef {
    /// The file that defines it.
    file: String,
    /// Its path inside that file's module: `Figure.Segment`.
    path: String,
    /// A map field's entry type: its key and value fields.
    map_entry: Option<(FieldDescriptorProto, FieldDescriptorProto)>,
}

struct Types(HashMap<String, TypeRef>);

impl Types {
    fn of(fds: &FileDescriptorSet) -> Types {
        fn messages(map: &mut HashMap<String, TypeRef>, file: &str, scope: &str, path: &str, list: &[DescriptorProto]) {
            for m in list {
                let fq = format!("{scope}.{}", m.name());
                let p = if path.is_empty() { m.name().to_string() } else { format!("{path}.{}", m.name()) };
                let map_entry =
                    m.options.as_ref().is_some_and(|o| o.map_entry()).then(|| (m.field[0].clone(), m.field[1].clone()));
                map.insert(fq.clone(), TypeRef { file: file.to_string(), path: p.clone(), map_entry });
                enums(map, file, &fq, &p, &m.enum_type);
                messages(map, file, &fq, &p, &m.nested_type);
            }
        }
        fn enums(
            map: &mut HashMap<String, TypeRef>,
            file: &str,
            scope: &str,
            path: &str,
            list: &[EnumDescriptorProto],
        ) {
            for e in list {
                let p = if path.is_empty() { e.name().to_string() } else { format!("{path}.{}", e.name()) };
                map.insert(
                    format!("{scope}.{}", e.name()),
                    TypeRef { file: file.to_string(), path: p, map_entry: None },
                );
            }
        }
        let mut map = HashMap::new();
        for f in &fds.file {
            let scope = if f.package().is_empty() { String::new() } else { format!(".{}", f.package()) };
            messages(&mut map, f.name(), &scope, "", &f.message_type);
            enums(&mut map, f.name(), &scope, "", &f.enum_type);
        }
        Types(map)
    }

    fn get(&self, fq: &str) -> Result<&TypeRef, Error> {
        self.0.get(fq).ok_or_else(|| Error(format!("type {fq} is not defined in the files given")))
    }

    /// How `fq` is written in the module of `from_file`.
    fn python(&self, fq: &str, from_file: &str) -> Result<String, Error> {
        let t = self.get(fq)?;
        Ok(if t.file == from_file {
            t.path.clone()
        } else {
            format!("{}.{}", alias(&module_name(&t.file, "_pb2")), t.path)
        })
    }
}

/// The files for `protos` (the files named on the command line).
pub fn generate(fds: &FileDescriptorSet, protos: &[ProtoFile], output: Output) -> Result<Vec<GeneratedFile>, Error> {
    let types = Types::of(fds);
    let mut out = Vec::new();
    for proto in protos {
        let Some(file) = fds.file.iter().find(|f| f.name() == proto.name) else { continue };
        if output == Output::All {
            out.push(pb2_py(file));
            out.push(pb2_pyi(file, &types)?);
        }
        if !proto.services.is_empty() {
            out.push(services_py(file, proto, &types)?);
        }
    }
    Ok(out)
}

fn header(file: &FileDescriptorProto) -> String {
    format!("# Generated by cellshm-codegen from {}. Do not edit.\n", file.name())
}

/// The file's descriptor as a Python bytes literal, source info left out (as protoc does).
fn serialized_descriptor(file: &FileDescriptorProto) -> String {
    let mut stripped = file.clone();
    stripped.source_code_info = None;
    let mut literal = String::from("b'");
    for byte in stripped.encode_to_vec() {
        match byte {
            b'\\' => literal.push_str("\\\\"),
            b'\'' => literal.push_str("\\'"),
            0x20..=0x7e => literal.push(byte as char),
            _ => {
                let _ = write!(literal, "\\x{byte:02x}");
            }
        }
    }
    literal.push('\'');
    literal
}

fn pb2_py(file: &FileDescriptorProto) -> GeneratedFile {
    let module = module_name(file.name(), "_pb2");
    let mut py = header(file);
    py.push_str("\"\"\"Generated protocol buffer code.\"\"\"\n");
    py.push_str("from google.protobuf import descriptor_pool as _descriptor_pool\n");
    py.push_str("from google.protobuf import symbol_database as _symbol_database\n");
    py.push_str("from google.protobuf.internal import builder as _builder\n\n");
    py.push_str("_sym_db = _symbol_database.Default()\n\n");
    for dep in &file.dependency {
        let _ = writeln!(
            py,
            "{}  # noqa: F401 (its types must be in the pool first)",
            import_line(&module_name(dep, "_pb2"))
        );
    }
    let _ =
        writeln!(py, "\nDESCRIPTOR = _descriptor_pool.Default().AddSerializedFile({})\n", serialized_descriptor(file));
    py.push_str("_globals = globals()\n");
    py.push_str("_builder.BuildMessageAndEnumDescriptors(DESCRIPTOR, _globals)\n");
    let _ = writeln!(py, "_builder.BuildTopDescriptorsAndMessages(DESCRIPTOR, '{module}', _globals)");
    GeneratedFile { name: format!("{}.py", module.replace('.', "/")), content: py }
}

fn scalar(t: Type) -> &'static str {
    match t {
        Type::Double | Type::Float => "float",
        Type::Bool => "bool",
        Type::String => "str",
        Type::Bytes => "bytes",
        _ => "int",
    }
}

/// A field's attribute type and its `__init__` parameter type.
fn field_types(f: &FieldDescriptorProto, file: &str, types: &Types) -> Result<(String, String), Error> {
    let repeated = f.label() == Label::Repeated;
    match f.r#type() {
        Type::Message => {
            let t = types.get(f.type_name())?;
            if let Some((key, value)) = &t.map_entry {
                let k = scalar(key.r#type());
                return Ok(if value.r#type() == Type::Message {
                    let v = types.python(value.type_name(), file)?;
                    (format!("_containers.MessageMap[{k}, {v}]"), format!("_Optional[_Mapping[{k}, {v}]]"))
                } else {
                    let v = if value.r#type() == Type::Enum {
                        types.python(value.type_name(), file)?
                    } else {
                        scalar(value.r#type()).to_string()
                    };
                    (format!("_containers.ScalarMap[{k}, {v}]"), format!("_Optional[_Mapping[{k}, {v}]]"))
                });
            }
            let m = types.python(f.type_name(), file)?;
            Ok(if repeated {
                (
                    format!("_containers.RepeatedCompositeFieldContainer[{m}]"),
                    format!("_Optional[_Iterable[_Union[{m}, _Mapping[str, object]]]]"),
                )
            } else {
                (m.clone(), format!("_Optional[_Union[{m}, _Mapping[str, object]]]"))
            })
        }
        Type::Enum => {
            let e = types.python(f.type_name(), file)?;
            Ok(if repeated {
                (
                    format!("_containers.RepeatedScalarFieldContainer[{e}]"),
                    format!("_Optional[_Iterable[_Union[{e}, str]]]"),
                )
            } else {
                (e.clone(), format!("_Optional[_Union[{e}, str]]"))
            })
        }
        other => {
            let s = scalar(other);
            Ok(if repeated {
                (format!("_containers.RepeatedScalarFieldContainer[{s}]"), format!("_Optional[_Iterable[{s}]]"))
            } else {
                (s.to_string(), format!("_Optional[{s}]"))
            })
        }
    }
}

fn enum_stub(pyi: &mut String, indent: &str, owner: &str, e: &EnumDescriptorProto) {
    let name = if owner.is_empty() { e.name().to_string() } else { format!("{owner}.{}", e.name()) };
    let _ = writeln!(pyi, "{indent}class {}(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):", e.name());
    let _ = writeln!(pyi, "{indent}    __slots__ = ()");
    for v in &e.value {
        let _ = writeln!(pyi, "{indent}    {}: _ClassVar[{name}]", v.name());
    }
}

fn enum_values(pyi: &mut String, indent: &str, owner: &str, e: &EnumDescriptorProto) {
    let name = if owner.is_empty() { e.name().to_string() } else { format!("{owner}.{}", e.name()) };
    for v in &e.value {
        let _ = writeln!(pyi, "{indent}{}: {name}", v.name());
    }
}

fn message_stub(
    pyi: &mut String,
    indent: &str,
    owner: &str,
    m: &DescriptorProto,
    file: &str,
    types: &Types,
) -> Result<(), Error> {
    if m.options.as_ref().is_some_and(|o| o.map_entry()) {
        return Ok(()); // map entries are not used by name
    }
    let path = if owner.is_empty() { m.name().to_string() } else { format!("{owner}.{}", m.name()) };
    let inner = format!("{indent}    ");
    let named: Vec<&FieldDescriptorProto> = m.field.iter().filter(|f| !is_keyword(f.name())).collect();
    let _ = writeln!(pyi, "{indent}class {}(_message.Message):", m.name());
    let slots: Vec<String> = named.iter().map(|f| format!("\"{}\"", f.name())).collect();
    let _ = writeln!(pyi, "{inner}__slots__ = ({}{})", slots.join(", "), if slots.len() == 1 { "," } else { "" });
    for e in &m.enum_type {
        enum_stub(pyi, &inner, &path, e);
        enum_values(pyi, &inner, &path, e);
    }
    for nested in &m.nested_type {
        message_stub(pyi, &inner, &path, nested, file, types)?;
    }
    for f in &m.field {
        let _ = writeln!(pyi, "{inner}{}_FIELD_NUMBER: _ClassVar[int]", f.name().to_uppercase());
    }
    let mut params = Vec::new();
    for f in &named {
        let (attribute, param) = field_types(f, file, types)?;
        let _ = writeln!(pyi, "{inner}{}: {attribute}", f.name());
        params.push(format!("{}: {param} = ...", f.name()));
    }
    if named.len() < m.field.len() {
        // Keyword-named fields are set through **kwargs (and read with getattr).
        params.push("**kwargs: object".to_string());
    }
    let params = if params.is_empty() { String::new() } else { format!(", {}", params.join(", ")) };
    let _ = writeln!(pyi, "{inner}def __init__(self{params}) -> None: ...");
    Ok(())
}

fn pb2_pyi(file: &FileDescriptorProto, types: &Types) -> Result<GeneratedFile, Error> {
    let module = module_name(file.name(), "_pb2");
    let mut pyi = header(file);
    for dep in &file.dependency {
        let _ = writeln!(pyi, "{}", import_line(&module_name(dep, "_pb2")));
    }
    pyi.push_str("from google.protobuf.internal import containers as _containers\n");
    pyi.push_str("from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper\n");
    pyi.push_str("from google.protobuf import descriptor as _descriptor\n");
    pyi.push_str("from google.protobuf import message as _message\n");
    pyi.push_str("from collections.abc import Iterable as _Iterable, Mapping as _Mapping\n");
    pyi.push_str("from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union\n\n");
    pyi.push_str("DESCRIPTOR: _descriptor.FileDescriptor\n\n");
    for e in &file.enum_type {
        enum_stub(&mut pyi, "", "", e);
    }
    for e in &file.enum_type {
        enum_values(&mut pyi, "", "", e);
    }
    for m in &file.message_type {
        pyi.push('\n');
        message_stub(&mut pyi, "", "", m, file.name(), types)?;
    }
    Ok(GeneratedFile { name: format!("{}.pyi", module.replace('.', "/")), content: pyi })
}

/// A method's name in Python: snake case, `_` after a keyword.
fn py_method(name: &str) -> String {
    let snake = snake_case(name);
    if is_keyword(&snake) {
        format!("{snake}_")
    } else {
        snake
    }
}

fn kind_name(kind: MethodKind) -> &'static str {
    match kind {
        MethodKind::Unary => "UNARY",
        MethodKind::Stream => "STREAM",
        MethodKind::ServerStreaming => "SERVER_STREAMING",
        MethodKind::ClientStreaming => "CLIENT_STREAMING",
        MethodKind::Bidi => "BIDI",
    }
}

fn services_py(file: &FileDescriptorProto, proto: &ProtoFile, types: &Types) -> Result<GeneratedFile, Error> {
    let module = module_name(file.name(), "_cellshm");
    let mut py = header(file);
    let _ = writeln!(py, "\"\"\"cellshm clients and servicers of the services of {}.\"\"\"\n", file.name());
    py.push_str("from __future__ import annotations\n\n");
    py.push_str("from typing import Optional, Tuple, Union\n\n");
    py.push_str("import cellshm\nfrom cellshm import typed as _typed\n\n");
    // This file's messages and those its methods use from other files.
    let mut modules = vec![module_name(file.name(), "_pb2")];
    for m in proto.services.iter().flat_map(|s| &s.methods) {
        for t in [&m.input, &m.output] {
            let defining = &types.get(&format!(".{t}"))?.file;
            let module = module_name(defining, "_pb2");
            if !modules.contains(&module) {
                modules.push(module);
            }
        }
    }
    for module in &modules {
        let _ = writeln!(py, "{}", import_line(module));
    }
    let msg = |t: &str| -> Result<String, Error> {
        let r = types.get(&format!(".{t}"))?;
        Ok(format!("{}.{}", alias(&module_name(&r.file, "_pb2")), r.path))
    };
    let mut all = Vec::new();
    for service in &proto.services {
        let svc = &service.name;
        let serve = format!("serve_{}", snake_case(svc));
        all.extend([format!("{svc}Client"), format!("{svc}Servicer"), serve.clone()]);
        let _ = write!(py, "\n\n{}_METHODS: Tuple[_typed.MethodInfo, ...] = (\n", crate::model::macro_case(svc));
        for m in &service.methods {
            let _ = writeln!(
                py,
                "    _typed.MethodInfo(\"{}\", {}, cellshm.MethodKind.{}),",
                m.cellshm_name,
                m.id,
                kind_name(m.kind)
            );
        }
        py.push_str(")\n");
        let table = format!("{}_METHODS", crate::model::macro_case(svc));

        // The client.
        let _ = write!(
            py,
            "\n\nclass {svc}Client:\n    \"\"\"A client of ``{full}``: calls through a host's :class:`cellshm.Peer`, or a\n    :class:`cellshm.Cell` calling its host. ``timeout`` (seconds) applies to every call\n    unless one says otherwise.\"\"\"\n\n    SERVICE = \"{full}\"\n    METHODS = {table}\n\n",
            full = service.full_name
        );
        py.push_str("    def __init__(self, caller: _typed.Caller, *, timeout: Optional[float] = None) -> None:\n");
        py.push_str("        self._caller = caller\n        self._timeout = timeout\n\n");
        py.push_str("    @classmethod\n");
        let _ = writeln!(
            py,
            "    def connect(cls, caller: _typed.Caller, *, timeout: Optional[float] = None, check_timeout: float = 5.0) -> \"{svc}Client\":"
        );
        let _ = writeln!(
            py,
            "        \"\"\"A client, once the peer is known to serve every method of ``{}`` as its kind\n        (raises :class:`cellshm.FailedPrecondition` naming the first that is not).\"\"\"",
            service.full_name
        );
        let _ = writeln!(py, "        _typed.check_served(caller, cls.SERVICE, cls.METHODS, check_timeout)");
        py.push_str("        return cls(caller, timeout=timeout)\n\n");
        py.push_str("    def _timeout_for(self, timeout: Optional[float]) -> Optional[float]:\n");
        py.push_str("        return self._timeout if timeout is None else timeout\n");
        for (i, m) in service.methods.iter().enumerate() {
            let name = py_method(&m.name);
            let (input, output) = (msg(&m.input)?, msg(&m.output)?);
            let info = format!("{table}[{i}]");
            py.push('\n');
            match m.kind {
                MethodKind::Unary => {
                    let _ = writeln!(
                        py,
                        "    def {name}(self, request: {input}, *, timeout: Optional[float] = None) -> {output}:"
                    );
                    let _ = writeln!(py, "        \"\"\"Calls ``{}``.\"\"\"", m.cellshm_name);
                    let _ = writeln!(py, "        return _typed.unary(self._caller, {info}.name, request, {output}, self._timeout_for(timeout))\n");
                    let _ = writeln!(py, "    async def {name}_async(self, request: {input}, *, timeout: Optional[float] = None) -> {output}:");
                    let _ = writeln!(py, "        \"\"\"Calls ``{}`` from asyncio.\"\"\"", m.cellshm_name);
                    let _ = writeln!(py, "        return await _typed.unary_async(self._caller, {info}.name, request, {output}, self._timeout_for(timeout))");
                }
                MethodKind::ServerStreaming => {
                    let _ = writeln!(py, "    def {name}(self, request: {input}, *, timeout: Optional[float] = None) -> _typed.ServerStreaming[{output}]:");
                    let _ = writeln!(
                        py,
                        "        \"\"\"Opens ``{}``: iterate (or ``async for``) its responses.\"\"\"",
                        m.cellshm_name
                    );
                    let _ = writeln!(py, "        return _typed.server_streaming(self._caller, {info}.name, request, {output}, self._timeout_for(timeout))");
                }
                MethodKind::ClientStreaming => {
                    let _ = writeln!(py, "    def {name}(self, *, timeout: Optional[float] = None) -> _typed.ClientStreaming[{input}, {output}]:");
                    let _ = writeln!(
                        py,
                        "        \"\"\"Opens ``{}``: ``send`` the requests, then ``finish`` for the response.\"\"\"",
                        m.cellshm_name
                    );
                    let _ = writeln!(py, "        return _typed.client_streaming(self._caller, {info}.name, {output}, self._timeout_for(timeout))");
                }
                MethodKind::Bidi | MethodKind::Stream => {
                    let _ = writeln!(
                        py,
                        "    def {name}(self, *, timeout: Optional[float] = None) -> _typed.Bidi[{input}, {output}]:"
                    );
                    let _ = writeln!(
                        py,
                        "        \"\"\"Opens ``{}``: ``send`` and ``recv`` (or iterate) in any order.\"\"\"",
                        m.cellshm_name
                    );
                    let _ = writeln!(
                        py,
                        "        return _typed.bidi(self._caller, {info}.name, {output}, self._timeout_for(timeout))"
                    );
                }
            }
        }

        // The servicer.
        let _ = write!(
            py,
            "\n\nclass {svc}Servicer:\n    \"\"\"The handlers of ``{full}``: override the methods, then ``{serve}(cell_or_hub, servicer)``.\n    A method left as it is answers UNIMPLEMENTED.\"\"\"\n",
            full = service.full_name
        );
        for m in &service.methods {
            let name = py_method(&m.name);
            let (input, output) = (msg(&m.input)?, msg(&m.output)?);
            py.push('\n');
            match m.kind {
                MethodKind::Unary => {
                    let _ = writeln!(
                        py,
                        "    def {name}(self, request: {input}, context: cellshm.CallContext) -> {output}:"
                    );
                }
                MethodKind::ServerStreaming => {
                    let _ = writeln!(
                        py,
                        "    def {name}(self, request: {input}, stream: _typed.ServerStream[None, {output}]) -> None:"
                    );
                }
                MethodKind::ClientStreaming => {
                    let _ =
                        writeln!(py, "    def {name}(self, stream: _typed.ServerStream[{input}, None]) -> {output}:");
                }
                MethodKind::Bidi | MethodKind::Stream => {
                    let _ =
                        writeln!(py, "    def {name}(self, stream: _typed.ServerStream[{input}, {output}]) -> None:");
                }
            }
            let _ = writeln!(py, "        \"\"\"Serves ``{}``.\"\"\"", m.cellshm_name);
            let _ = writeln!(py, "        raise cellshm.Unimplemented(\"{} is not implemented\")", m.cellshm_name);
        }

        // The registration.
        let _ = write!(
            py,
            "\n\ndef {serve}(target: Union[cellshm.Cell, cellshm.Hub], servicer: {svc}Servicer) -> None:\n    \"\"\"Serves ``{full}`` with ``servicer`` on a cell (to its host) or a hub (to every cell).\"\"\"\n",
            full = service.full_name
        );
        if service.methods.is_empty() {
            py.push_str("    del target, servicer\n");
        }
        for (i, m) in service.methods.iter().enumerate() {
            let name = py_method(&m.name);
            let (input, output) = (msg(&m.input)?, msg(&m.output)?);
            let info = format!("{table}[{i}]");
            let helper = match m.kind {
                MethodKind::Unary => "serve_unary",
                MethodKind::ServerStreaming => "serve_server_streaming",
                MethodKind::ClientStreaming => "serve_client_streaming",
                MethodKind::Bidi | MethodKind::Stream => "serve_bidi",
            };
            let _ = writeln!(py, "    _typed.{helper}(target, {info}, {input}, servicer.{name})");
            let _ = output; // the handler's return type says it
        }
    }
    let _ = write!(py, "\n\n__all__ = [{}]\n", all.iter().map(|n| format!("\"{n}\"")).collect::<Vec<_>>().join(", "));
    Ok(GeneratedFile { name: format!("{}.py", module.replace('.', "/")), content: py })
}
