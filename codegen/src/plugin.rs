//! The protoc plugin protocol: a `CodeGeneratorRequest` in, a `CodeGeneratorResponse`
//! out. Shared by the `protoc-gen-cellshm` binary and the Python package's plugin.

use prost::Message;
use prost_types::compiler::code_generator_response::File;
use prost_types::compiler::{CodeGeneratorRequest, CodeGeneratorResponse};
use prost_types::FileDescriptorSet;

use crate::{generate, Error, Lang};

/// Answers an encoded `CodeGeneratorRequest` with an encoded `CodeGeneratorResponse`
/// (whose `error` says what went wrong with the `.proto` files or the options). Only
/// bytes that are not a request at all are an `Err`.
pub fn respond(request: &[u8]) -> Result<Vec<u8>, Error> {
    let request = CodeGeneratorRequest::decode(request)
        .map_err(|e| Error(format!("stdin is not a CodeGeneratorRequest (run me from protoc): {e}")))?;
    Ok(answer(request).encode_to_vec())
}

/// The options: `lang=c` (the default), `lang=rust`, `lang=cpp`, or `lang=python` (the
/// `_cellshm.py` modules only: protoc's `--python_out`/`--pyi_out` write the `_pb2` ones).
fn answer(request: CodeGeneratorRequest) -> CodeGeneratorResponse {
    let mut lang = Lang::C;
    for option in request.parameter().split(',').filter(|o| !o.is_empty()) {
        match option.split_once('=') {
            Some(("lang", "python")) => lang = Lang::PythonServices,
            Some(("lang", name)) => match Lang::parse(name) {
                Ok(l) => lang = l,
                Err(e) => return failed(e.0),
            },
            _ => {
                return failed(format!(
                    "unknown option {option:?}: expected lang=rust, lang=c, lang=cpp or lang=python"
                ))
            }
        }
    }
    let fds = FileDescriptorSet { file: request.proto_file };
    match generate(lang, &fds, &request.file_to_generate) {
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
