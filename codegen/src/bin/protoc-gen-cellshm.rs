//! `protoc-gen-cellshm`: cellshm-codegen as a protoc plugin.
//!
//! `protoc --plugin=protoc-gen-cellshm --cellshm_out=lang=c:DIR kv.proto` (or
//! `lang=rust`; `c` is the default). Reads a `CodeGeneratorRequest` on stdin, writes a
//! `CodeGeneratorResponse` on stdout.

use std::io::{Read, Write};
use std::process::ExitCode;

use prost::Message;
use prost_types::compiler::code_generator_response::File;
use prost_types::compiler::{CodeGeneratorRequest, CodeGeneratorResponse};
use prost_types::FileDescriptorSet;

fn main() -> ExitCode {
    let mut input = Vec::new();
    if let Err(e) = std::io::stdin().read_to_end(&mut input) {
        eprintln!("protoc-gen-cellshm: reading the request: {e}");
        return ExitCode::from(1);
    }
    let response = match CodeGeneratorRequest::decode(input.as_slice()) {
        Ok(request) => respond(request),
        Err(e) => {
            eprintln!("protoc-gen-cellshm: stdin is not a CodeGeneratorRequest (run me from protoc): {e}");
            return ExitCode::from(1);
        }
    };
    if let Err(e) = std::io::stdout().write_all(&response.encode_to_vec()) {
        eprintln!("protoc-gen-cellshm: writing the response: {e}");
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}

fn respond(request: CodeGeneratorRequest) -> CodeGeneratorResponse {
    let mut lang = cellshm_codegen::Lang::C;
    for option in request.parameter().split(',').filter(|o| !o.is_empty()) {
        match option.split_once('=') {
            Some(("lang", name)) => match cellshm_codegen::Lang::parse(name) {
                Ok(l) => lang = l,
                Err(e) => return failed(e.0),
            },
            _ => return failed(format!("unknown option {option:?}: expected lang=rust or lang=c")),
        }
    }
    let fds = FileDescriptorSet { file: request.proto_file };
    match cellshm_codegen::generate(lang, &fds, &request.file_to_generate) {
        Ok(files) => CodeGeneratorResponse {
            file: files
                .into_iter()
                .map(|f| File { name: Some(f.name), content: Some(f.content), ..File::default() })
                .collect(),
            // Proto3 optional fields are understood (FEATURE_PROTO3_OPTIONAL).
            supported_features: Some(1),
            ..CodeGeneratorResponse::default()
        },
        Err(e) => failed(e.0),
    }
}

fn failed(error: String) -> CodeGeneratorResponse {
    CodeGeneratorResponse { error: Some(error), ..CodeGeneratorResponse::default() }
}
