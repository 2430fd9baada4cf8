//! The Rust output: prost's messages, and per service a client, a handler trait and a
//! registration function over `cellshm::typed`.

use std::fmt::Write;

use cellshm::typed::MethodKind;
use prost_build::{Method, Service, ServiceGenerator};
use prost_types::FileDescriptorSet;

use crate::{Error, GeneratedFile};

/// The `.rs` files of every package of `fds` (the files given and what they import;
/// prost names them `pkg.rs`, or `_.rs` for no package), but for the well-known types,
/// which are `prost_types`'.
pub fn generate(fds: &FileDescriptorSet) -> Result<Vec<GeneratedFile>, Error> {
    // Every file goes to prost-build, the well-known types' too: it looks up each field's
    // message type in what it was given (to decide what a message can derive) and panics
    // on one it was not. Their module is generated and left out: they are `prost_types`'
    // (prost-build's default extern path, as in tonic-build).
    check_references(fds)?;
    let requests =
        fds.file.iter().map(|f| (prost_build::Module::from_protobuf_package_name(f.package()), f.clone())).collect();
    let mut config = prost_build::Config::new();
    let descriptor_sets = fds
        .file
        .iter()
        .flat_map(|f| {
            let set = crate::model::descriptor_set(fds, f.name());
            let package = f.package();
            f.service.iter().map(move |s| {
                let full = if package.is_empty() { s.name().to_string() } else { format!("{package}.{}", s.name()) };
                (full, set.clone())
            })
        })
        .collect();
    config.service_generator(Box::new(CellshmServices { descriptor_sets }));
    let modules = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| config.generate(requests)))
        .map_err(|panic| Error(format!("prost-build failed: {}", cellshm::panic_message(&*panic))))?
        .map_err(|e| Error(format!("generating Rust: {e}")))?;
    let well_known = prost_build::Module::from_protobuf_package_name(WELL_KNOWN_PACKAGE);
    let mut out: Vec<GeneratedFile> = modules
        .into_iter()
        .filter(|(module, _)| *module != well_known)
        .map(|(module, content)| {
            let name = if module.parts().next().is_none() {
                "_.rs".to_string()
            } else {
                format!("{}.rs", module.parts().collect::<Vec<_>>().join("."))
            };
            GeneratedFile { name, content }
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Fails, naming the file and the field, if a field or method refers to a type the set
/// does not define (a descriptor set from elsewhere that lacks an import): prost-build
/// would panic on it without saying where.
fn check_references(fds: &FileDescriptorSet) -> Result<(), Error> {
    fn fields(
        known: &std::collections::HashMap<String, crate::model::TypeInfo>,
        file: &str,
        scope: &str,
        messages: &[prost_types::DescriptorProto],
    ) -> Result<(), Error> {
        for m in messages {
            let name = format!("{scope}{}", m.name());
            for f in &m.field {
                if !f.type_name().is_empty() && !known.contains_key(f.type_name()) {
                    return Err(Error(format!(
                        "{file}: field {name}.{} has type {}, which none of the files given or imported defines",
                        f.name(),
                        f.type_name()
                    )));
                }
            }
            fields(known, file, &format!("{name}."), &m.nested_type)?;
        }
        Ok(())
    }
    let known = crate::model::types(fds);
    for file in &fds.file {
        fields(&known, file.name(), "", &file.message_type)?;
        for s in &file.service {
            for m in &s.method {
                for t in [m.input_type(), m.output_type()] {
                    if !known.contains_key(t) {
                        return Err(Error(format!(
                            "{}: method {}.{} uses type {t}, which none of the files given or imported defines",
                            file.name(),
                            s.name(),
                            m.name()
                        )));
                    }
                }
            }
        }
    }
    Ok(())
}

/// The well-known types' package: `prost_types` has them.
const WELL_KNOWN_PACKAGE: &str = "google.protobuf";

/// prost's hook for services: writes cellshm's client and server for each.
struct CellshmServices {
    /// Each service's file and its imports, serialized (`model::descriptor_set`), by the
    /// service's full name.
    descriptor_sets: std::collections::HashMap<String, Vec<u8>>,
}

impl ServiceGenerator for CellshmServices {
    fn generate(&mut self, service: Service, buf: &mut String) {
        let full = if service.package.is_empty() {
            service.proto_name.clone()
        } else {
            format!("{}.{}", service.package, service.proto_name)
        };
        let descriptor_set = self.descriptor_sets.get(&full).map_or(&[][..], |set| set);
        let _ = service_code(&service, &full, descriptor_set, buf);
    }
}

fn kind_of(m: &Method) -> MethodKind {
    MethodKind::of(m.client_streaming, m.server_streaming)
}

fn kind_path(kind: MethodKind) -> &'static str {
    match kind {
        MethodKind::Unary => "Unary",
        MethodKind::ServerStreaming => "ServerStreaming",
        MethodKind::ClientStreaming => "ClientStreaming",
        MethodKind::Bidi => "Bidi",
        MethodKind::Stream => "Stream",
    }
}

fn const_name(m: &Method) -> String {
    m.name.trim_start_matches("r#").to_uppercase()
}

fn doc(buf: &mut String, indent: &str, lines: &[String]) {
    // prost keeps the space after `//` in a comment's lines.
    for line in lines.iter().flat_map(|l| l.lines()) {
        let line = line.strip_prefix(' ').unwrap_or(line).trim_end();
        let _ = writeln!(buf, "{indent}///{}{line}", if line.is_empty() { "" } else { " " });
    }
}

/// `bytes` as a Rust byte string literal.
fn byte_string(bytes: &[u8]) -> String {
    let mut literal = String::with_capacity(bytes.len() * 2 + 3);
    literal.push_str("b\"");
    for &b in bytes {
        match b {
            b'"' | b'\\' => {
                literal.push('\\');
                literal.push(b as char);
            }
            0x20..=0x7e => literal.push(b as char),
            _ => {
                let _ = write!(literal, "\\x{b:02x}");
            }
        }
    }
    literal.push('"');
    literal
}

fn service_code(s: &Service, full: &str, descriptor_set: &[u8], buf: &mut String) -> std::fmt::Result {
    let svc = &s.name;
    let methods_mod = format!("{}_methods", to_snake(svc));
    let serve_fn = format!("serve_{}", to_snake(svc));
    // The method table.
    writeln!(buf, "/// The methods of `{full}` as cellshm names them.")?;
    writeln!(buf, "pub mod {methods_mod} {{")?;
    for m in &s.methods {
        let name = format!("{full}.{}", m.proto_name);
        writeln!(buf, "    /// `{name}`.")?;
        writeln!(
            buf,
            "    pub const {}: ::cellshm::typed::MethodInfo = ::cellshm::typed::MethodInfo {{ name: \"{name}\", id: ::cellshm::method_id(\"{name}\"), kind: ::cellshm::typed::MethodKind::{} }};",
            const_name(m),
            kind_path(kind_of(m))
        )?;
    }
    writeln!(buf, "    /// Every method, in declaration order.")?;
    writeln!(
        buf,
        "    pub const ALL: [::cellshm::typed::MethodInfo; {}] = [{}];",
        s.methods.len(),
        s.methods.iter().map(const_name).collect::<Vec<_>>().join(", ")
    )?;
    writeln!(buf, "    /// The `.proto` file that declares `{full}` and its imports, as a serialized")?;
    writeln!(buf, "    /// `google.protobuf.FileDescriptorSet`: what `serve_*` registers for gRPC reflection.")?;
    writeln!(buf, "    pub const FILE_DESCRIPTOR_SET: &[u8] = {};", byte_string(descriptor_set))?;
    writeln!(buf, "}}")?;

    // The client.
    doc(buf, "", &s.comments.leading);
    writeln!(buf, "/// A client of `{full}`: calls the other end of a link (a host's `Peer`, a `Cell` calling its host, a `Supervised` cell).")?;
    writeln!(buf, "pub struct {svc}Client<'a, C: ::cellshm::LinkEnd> {{")?;
    writeln!(buf, "    caller: &'a C,")?;
    writeln!(buf, "    options: ::cellshm::CallOptions,")?;
    writeln!(buf, "}}")?;
    writeln!(buf, "impl<C: ::cellshm::LinkEnd> ::core::fmt::Debug for {svc}Client<'_, C> {{")?;
    writeln!(buf, "    fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {{")?;
    writeln!(buf, "        f.debug_struct(\"{svc}Client\").field(\"options\", &self.options).finish_non_exhaustive()")?;
    writeln!(buf, "    }}")?;
    writeln!(buf, "}}")?;
    writeln!(buf, "impl<'a, C: ::cellshm::LinkEnd> {svc}Client<'a, C> {{")?;
    writeln!(buf, "    /// The service's name.")?;
    writeln!(buf, "    pub const SERVICE: &'static str = \"{full}\";")?;
    writeln!(buf, "    /// A client that calls through `caller` with default options (the caller's default timeout).")?;
    writeln!(buf, "    pub fn new(caller: &'a C) -> Self {{")?;
    writeln!(buf, "        Self {{ caller, options: ::cellshm::CallOptions::default() }}")?;
    writeln!(buf, "    }}")?;
    writeln!(buf, "    /// A client that first checks that the peer serves every method of `{full}`")?;
    writeln!(buf, "    /// (FAILED_PRECONDITION naming a missing one, ALREADY_EXISTS for a hash collision).")?;
    writeln!(buf, "    pub fn connect(caller: &'a C, timeout: ::std::time::Duration) -> ::cellshm::Result<Self> {{")?;
    writeln!(buf, "        let served = caller.served_methods(timeout)?;")?;
    writeln!(buf, "        ::cellshm::typed::check_served(&served, Self::SERVICE, &{methods_mod}::ALL)?;")?;
    writeln!(buf, "        Ok(Self::new(caller))")?;
    writeln!(buf, "    }}")?;
    writeln!(buf, "    /// What this client calls through.")?;
    writeln!(buf, "    pub fn caller(&self) -> &'a C {{")?;
    writeln!(buf, "        self.caller")?;
    writeln!(buf, "    }}")?;
    writeln!(buf, "    /// The options every call of this client uses (a timeout, a deadline).")?;
    writeln!(buf, "    pub fn with_options(mut self, options: ::cellshm::CallOptions) -> Self {{")?;
    writeln!(buf, "        self.options = options;")?;
    writeln!(buf, "        self")?;
    writeln!(buf, "    }}")?;
    for m in &s.methods {
        let name = format!("{methods_mod}::{}.name", const_name(m));
        let (input, output) = (&m.input_type, &m.output_type);
        let fname = &m.name;
        let with = format!("{}_with", fname.trim_start_matches("r#"));
        // What each kind takes and returns, and the cellshm::typed function that does it.
        let (what, request, returns, helper) = match kind_of(m) {
            MethodKind::Unary => ("Calls", true, output.to_string(), "unary"),
            MethodKind::ServerStreaming => (
                "Opens (its responses, as an iterator)",
                true,
                format!("::cellshm::typed::Streaming<{output}>"),
                "server_streaming",
            ),
            MethodKind::ClientStreaming => (
                "Opens (send the requests, then `finish` for the response)",
                false,
                format!("::cellshm::typed::ClientStreaming<{input}, {output}>"),
                "client_streaming",
            ),
            MethodKind::Bidi | MethodKind::Stream => (
                "Opens (send and receive in any order)",
                false,
                format!("::cellshm::typed::Bidi<{input}, {output}>"),
                "bidi",
            ),
        };
        let (param, arg) = if request { (format!("request: &{input}, "), "request, ") } else { (String::new(), "") };
        doc(buf, "    ", &m.comments.leading);
        writeln!(buf, "    /// {what} `{full}.{}`.", m.proto_name)?;
        writeln!(buf, "    pub fn {fname}(&self, {param}) -> ::cellshm::Result<{returns}> {{")?;
        writeln!(buf, "        self.{with}({arg}&self.options)")?;
        writeln!(buf, "    }}")?;
        writeln!(buf, "    /// `{fname}` with these options.")?;
        writeln!(
            buf,
            "    pub fn {with}(&self, {param}options: &::cellshm::CallOptions) -> ::cellshm::Result<{returns}> {{"
        )?;
        writeln!(buf, "        ::cellshm::typed::{helper}(self.caller, {name}, {arg}options)")?;
        writeln!(buf, "    }}")?;
    }
    writeln!(buf, "}}")?;

    // The handler trait.
    doc(buf, "", &s.comments.leading);
    writeln!(buf, "/// The handlers of `{full}`: implement it, then `{serve_fn}`.")?;
    writeln!(buf, "pub trait {svc}: Send + Sync + 'static {{")?;
    for m in &s.methods {
        let (input, output) = (&m.input_type, &m.output_type);
        doc(buf, "    ", &m.comments.leading);
        writeln!(buf, "    /// Serves `{full}.{}`.", m.proto_name)?;
        let fname = &m.name;
        match kind_of(m) {
            MethodKind::Unary => writeln!(buf, "    fn {fname}(&self, call: &::cellshm::Call<'_>, request: {input}) -> ::cellshm::Result<{output}>;")?,
            MethodKind::ServerStreaming => writeln!(buf, "    fn {fname}(&self, request: {input}, stream: &mut ::cellshm::typed::ServerStream<'_, (), {output}>) -> ::cellshm::Result<()>;")?,
            MethodKind::ClientStreaming => writeln!(buf, "    fn {fname}(&self, stream: &mut ::cellshm::typed::ServerStream<'_, {input}, ()>) -> ::cellshm::Result<{output}>;")?,
            MethodKind::Bidi | MethodKind::Stream => writeln!(buf, "    fn {fname}(&self, stream: &mut ::cellshm::typed::ServerStream<'_, {input}, {output}>) -> ::cellshm::Result<()>;")?,
        }
    }
    writeln!(buf, "}}")?;

    // The registration.
    writeln!(buf, "/// Serves `{full}` with `service` on a `Cell` (to its host) or a `Hub` (to every cell).")?;
    writeln!(buf, "/// A method whose name (or id) is taken already is refused with ALREADY_EXISTS.")?;
    // A request of google.protobuf.Empty is `()`: binding it is still the clearest code.
    writeln!(buf, "#[allow(clippy::let_unit_value)]")?;
    writeln!(
        buf,
        "pub fn {serve_fn}<R: ::cellshm::Registry>(registrar: &R, service: impl {svc}) -> ::cellshm::Result<()> {{"
    )?;
    if s.methods.is_empty() {
        writeln!(buf, "    let _ = service;")?;
    } else {
        writeln!(buf, "    let service = ::std::sync::Arc::new(service);")?;
    }
    for m in &s.methods {
        let info = format!("{methods_mod}::{}", const_name(m));
        let fname = &m.name;
        writeln!(buf, "    {{")?;
        writeln!(buf, "        let service = service.clone();")?;
        match kind_of(m) {
            MethodKind::Unary => {
                writeln!(buf, "        registrar.method({info}.name, move |call| {{")?;
                writeln!(buf, "            ::cellshm::typed::serve_unary(call, {info}.name, |call, request| service.{fname}(call, request))")?;
            }
            MethodKind::ServerStreaming => {
                writeln!(buf, "        registrar.stream_method_as({info}.name, {info}.kind, move |call| {{")?;
                writeln!(buf, "            let request = ::cellshm::typed::opening_request(call, {info}.name)?;")?;
                writeln!(
                    buf,
                    "            service.{fname}(request, &mut ::cellshm::typed::ServerStream::new(call, {info}.name))"
                )?;
            }
            MethodKind::ClientStreaming => {
                writeln!(buf, "        registrar.stream_method_as({info}.name, {info}.kind, move |call| {{")?;
                writeln!(buf, "            let response = service.{fname}(&mut ::cellshm::typed::ServerStream::new(call, {info}.name))?;")?;
                writeln!(buf, "            ::cellshm::typed::set_stream_response(call, &response);")?;
                writeln!(buf, "            Ok(())")?;
            }
            MethodKind::Bidi | MethodKind::Stream => {
                writeln!(buf, "        registrar.stream_method_as({info}.name, {info}.kind, move |call| {{")?;
                writeln!(
                    buf,
                    "            service.{fname}(&mut ::cellshm::typed::ServerStream::new(call, {info}.name))"
                )?;
            }
        }
        writeln!(buf, "        }})?;")?;
        writeln!(buf, "    }}")?;
    }
    writeln!(buf, "    registrar.describe({methods_mod}::FILE_DESCRIPTOR_SET)")?;
    writeln!(buf, "}}")?;
    async_service_code(s, full, buf)
}

/// The async client, handler trait and registration of a service, beside the blocking
/// ones (as tonic's): `<Svc>AsyncClient`, `<Svc>Async`, `serve_<svc>_async`.
fn async_service_code(s: &Service, full: &str, buf: &mut String) -> std::fmt::Result {
    let svc = &s.name;
    let methods_mod = format!("{}_methods", to_snake(svc));
    let serve_fn = format!("serve_{}_async", to_snake(svc));

    // The client.
    doc(buf, "", &s.comments.leading);
    writeln!(buf, "/// An async client of `{full}`, on any executor: calls the other end of a link (a host's `Peer`, a `Cell` calling its host, a `Supervised` cell).")?;
    writeln!(buf, "pub struct {svc}AsyncClient<'a, C: ::cellshm::LinkEnd> {{")?;
    writeln!(buf, "    caller: &'a C,")?;
    writeln!(buf, "    options: ::cellshm::CallOptions,")?;
    writeln!(buf, "}}")?;
    writeln!(buf, "impl<C: ::cellshm::LinkEnd> ::core::fmt::Debug for {svc}AsyncClient<'_, C> {{")?;
    writeln!(buf, "    fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {{")?;
    writeln!(
        buf,
        "        f.debug_struct(\"{svc}AsyncClient\").field(\"options\", &self.options).finish_non_exhaustive()"
    )?;
    writeln!(buf, "    }}")?;
    writeln!(buf, "}}")?;
    writeln!(buf, "impl<'a, C: ::cellshm::LinkEnd> {svc}AsyncClient<'a, C> {{")?;
    writeln!(buf, "    /// The service's name.")?;
    writeln!(buf, "    pub const SERVICE: &'static str = \"{full}\";")?;
    writeln!(buf, "    /// A client that calls through `caller` with default options (the caller's default timeout).")?;
    writeln!(buf, "    pub fn new(caller: &'a C) -> Self {{")?;
    writeln!(buf, "        Self {{ caller, options: ::cellshm::CallOptions::default() }}")?;
    writeln!(buf, "    }}")?;
    writeln!(buf, "    /// A client that first checks that the peer serves every method of `{full}`")?;
    writeln!(buf, "    /// (FAILED_PRECONDITION naming a missing one, ALREADY_EXISTS for a hash collision).")?;
    writeln!(
        buf,
        "    pub async fn connect(caller: &'a C, timeout: ::std::time::Duration) -> ::cellshm::Result<Self> {{"
    )?;
    writeln!(buf, "        let served = caller.served_methods_async(timeout).await?;")?;
    writeln!(buf, "        ::cellshm::typed::check_served(&served, Self::SERVICE, &{methods_mod}::ALL)?;")?;
    writeln!(buf, "        Ok(Self::new(caller))")?;
    writeln!(buf, "    }}")?;
    writeln!(buf, "    /// What this client calls through.")?;
    writeln!(buf, "    pub fn caller(&self) -> &'a C {{")?;
    writeln!(buf, "        self.caller")?;
    writeln!(buf, "    }}")?;
    writeln!(buf, "    /// The options every call of this client uses (a timeout, a deadline).")?;
    writeln!(buf, "    pub fn with_options(mut self, options: ::cellshm::CallOptions) -> Self {{")?;
    writeln!(buf, "        self.options = options;")?;
    writeln!(buf, "        self")?;
    writeln!(buf, "    }}")?;
    for m in &s.methods {
        let name = format!("{methods_mod}::{}.name", const_name(m));
        let (input, output) = (&m.input_type, &m.output_type);
        let fname = &m.name;
        let with = format!("{}_with", fname.trim_start_matches("r#"));
        let (what, request, returns, helper) = match kind_of(m) {
            MethodKind::Unary => ("Calls", true, output.to_string(), "unary_async"),
            MethodKind::ServerStreaming => (
                "Opens (its responses, as a `futures_core::Stream`)",
                true,
                format!("::cellshm::typed::AsyncStreaming<{output}>"),
                "server_streaming_async",
            ),
            MethodKind::ClientStreaming => (
                "Opens (send the requests, then `finish` for the response)",
                false,
                format!("::cellshm::typed::AsyncClientStreaming<{input}, {output}>"),
                "client_streaming_async",
            ),
            MethodKind::Bidi | MethodKind::Stream => (
                "Opens (send and receive in any order)",
                false,
                format!("::cellshm::typed::AsyncBidi<{input}, {output}>"),
                "bidi_async",
            ),
        };
        let (param, arg) = if request { (format!("request: &{input}, "), "request, ") } else { (String::new(), "") };
        doc(buf, "    ", &m.comments.leading);
        writeln!(buf, "    /// {what} `{full}.{}`.", m.proto_name)?;
        writeln!(buf, "    pub async fn {fname}(&self, {param}) -> ::cellshm::Result<{returns}> {{")?;
        writeln!(buf, "        self.{with}({arg}&self.options).await")?;
        writeln!(buf, "    }}")?;
        writeln!(buf, "    /// `{fname}` with these options.")?;
        writeln!(
            buf,
            "    pub async fn {with}(&self, {param}options: &::cellshm::CallOptions) -> ::cellshm::Result<{returns}> {{"
        )?;
        writeln!(buf, "        ::cellshm::typed::{helper}(self.caller, {name}, {arg}options).await")?;
        writeln!(buf, "    }}")?;
    }
    writeln!(buf, "}}")?;

    // The handler trait: `async fn` in the implementation, a `Send` future in the trait
    // (so the registration can hand it to a multi-thread runtime).
    let future = |output: &str| format!("impl ::core::future::Future<Output = ::cellshm::Result<{output}>> + Send");
    doc(buf, "", &s.comments.leading);
    writeln!(buf, "/// The async handlers of `{full}`: implement it (with `async fn`s), then `{serve_fn}`.")?;
    writeln!(buf, "pub trait {svc}Async: Send + Sync + 'static {{")?;
    for m in &s.methods {
        let (input, output) = (&m.input_type, &m.output_type);
        doc(buf, "    ", &m.comments.leading);
        writeln!(buf, "    /// Serves `{full}.{}`.", m.proto_name)?;
        let fname = &m.name;
        match kind_of(m) {
            MethodKind::Unary => writeln!(buf, "    fn {fname}(&self, call: ::cellshm::AsyncCall, request: {input}) -> {};", future(output))?,
            MethodKind::ServerStreaming => writeln!(buf, "    fn {fname}(&self, request: {input}, stream: ::cellshm::typed::AsyncServerStream<(), {output}>) -> {};", future("()"))?,
            MethodKind::ClientStreaming => writeln!(buf, "    fn {fname}(&self, stream: ::cellshm::typed::AsyncServerStream<{input}, ()>) -> {};", future(output))?,
            MethodKind::Bidi | MethodKind::Stream => writeln!(buf, "    fn {fname}(&self, stream: ::cellshm::typed::AsyncServerStream<{input}, {output}>) -> {};", future("()"))?,
        }
    }
    writeln!(buf, "}}")?;

    // The registration.
    writeln!(
        buf,
        "/// Serves `{full}` with `service`'s async handlers on a `Cell` (to its host) or a `Hub` (to every cell),"
    )?;
    writeln!(
        buf,
        "/// on the runtime handed over with `spawn_handlers_on`. A method whose name (or id) is taken already"
    )?;
    writeln!(buf, "/// is refused with ALREADY_EXISTS.")?;
    writeln!(buf, "#[allow(clippy::let_unit_value)]")?;
    writeln!(
        buf,
        "pub fn {serve_fn}<R: ::cellshm::Registry>(registrar: &R, service: impl {svc}Async) -> ::cellshm::Result<()> {{"
    )?;
    if s.methods.is_empty() {
        writeln!(buf, "    let _ = service;")?;
    } else {
        writeln!(buf, "    let service = ::std::sync::Arc::new(service);")?;
    }
    for m in &s.methods {
        let info = format!("{methods_mod}::{}", const_name(m));
        let fname = &m.name;
        writeln!(buf, "    {{")?;
        writeln!(buf, "        let service = service.clone();")?;
        match kind_of(m) {
            MethodKind::Unary => {
                writeln!(buf, "        registrar.method_async({info}.name, move |call| {{")?;
                writeln!(buf, "            let service = service.clone();")?;
                writeln!(buf, "            async move {{")?;
                writeln!(buf, "                let request = ::cellshm::typed::decode(call.payload(), {info}.name)?;")?;
                writeln!(buf, "                let response = service.{fname}(call, request).await?;")?;
                writeln!(buf, "                Ok(::cellshm::typed::encode(&response))")?;
                writeln!(buf, "            }}")?;
            }
            MethodKind::ServerStreaming => {
                writeln!(buf, "        registrar.stream_method_async({info}.name, {info}.kind, move |call| {{")?;
                writeln!(buf, "            let service = service.clone();")?;
                writeln!(buf, "            async move {{")?;
                writeln!(buf, "                let request = ::cellshm::typed::decode(call.request(), {info}.name)?;")?;
                writeln!(buf, "                service.{fname}(request, ::cellshm::typed::AsyncServerStream::new(call, {info}.name)).await?;")?;
                writeln!(buf, "                Ok(::std::vec::Vec::new())")?;
                writeln!(buf, "            }}")?;
            }
            MethodKind::ClientStreaming => {
                writeln!(buf, "        registrar.stream_method_async({info}.name, {info}.kind, move |call| {{")?;
                writeln!(buf, "            let service = service.clone();")?;
                writeln!(buf, "            async move {{")?;
                writeln!(buf, "                let response = service.{fname}(::cellshm::typed::AsyncServerStream::new(call, {info}.name)).await?;")?;
                writeln!(buf, "                Ok(::cellshm::typed::encode(&response))")?;
                writeln!(buf, "            }}")?;
            }
            MethodKind::Bidi | MethodKind::Stream => {
                writeln!(buf, "        registrar.stream_method_async({info}.name, {info}.kind, move |call| {{")?;
                writeln!(buf, "            let service = service.clone();")?;
                writeln!(buf, "            async move {{")?;
                writeln!(buf, "                service.{fname}(::cellshm::typed::AsyncServerStream::new(call, {info}.name)).await?;")?;
                writeln!(buf, "                Ok(::std::vec::Vec::new())")?;
                writeln!(buf, "            }}")?;
            }
        }
        writeln!(buf, "        }})?;")?;
        writeln!(buf, "    }}")?;
    }
    writeln!(buf, "    registrar.describe({methods_mod}::FILE_DESCRIPTOR_SET)")?;
    writeln!(buf, "}}")?;
    Ok(())
}

fn to_snake(name: &str) -> String {
    crate::model::snake_case(name)
}
