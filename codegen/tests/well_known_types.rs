//! Well-known types in the Rust output, from every entry point: the library (what the
//! CLI and the build script call) and the protoc plugin, and a clear error when a
//! descriptor set lacks what a field refers to.

use std::path::PathBuf;

use cellshm_codegen::{generate, parse, plugin, Lang};
use prost::Message;
use prost_types::compiler::{CodeGeneratorRequest, CodeGeneratorResponse};

fn inventory() -> prost_types::FileDescriptorSet {
    let include = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/protos");
    parse(&[include.join("wkt/inventory.proto")], &[&include]).unwrap()
}

#[test]
fn the_rust_output_maps_well_known_types_to_prost_types_and_leaves_their_module_out() {
    let files = generate(Lang::Rust, &inventory(), &["wkt/inventory.proto".to_string()]).unwrap();
    let names: Vec<&str> = files.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["acme.inventory.v1.rs"]);
    let code = &files[0].content;
    for wanted in ["::prost_types::Timestamp", "::prost_types::Duration", "::prost_types::Any", "::prost_types::Struct"]
    {
        assert!(code.contains(wanted), "no {wanted} in the output");
    }
}

#[test]
fn the_protoc_plugin_handles_well_known_types_in_every_language() {
    let fds = inventory();
    for lang in ["rust", "c", "cpp", "python"] {
        let request = CodeGeneratorRequest {
            file_to_generate: vec!["wkt/inventory.proto".to_string()],
            parameter: Some(format!("lang={lang}")),
            proto_file: fds.file.clone(),
            ..CodeGeneratorRequest::default()
        };
        let response = CodeGeneratorResponse::decode(&plugin::respond(&request.encode_to_vec()).unwrap()[..]).unwrap();
        assert_eq!(response.error, None, "lang={lang}");
        assert!(!response.file.is_empty(), "lang={lang}: no files");
    }
}

#[test]
fn a_field_whose_type_is_missing_from_the_set_is_named_not_a_panic() {
    let mut fds = inventory();
    fds.file.retain(|f| f.name() != "google/protobuf/timestamp.proto");
    let error = generate(Lang::Rust, &fds, &["wkt/inventory.proto".to_string()]).unwrap_err();
    assert!(
        error.0.contains("wkt/inventory.proto")
            && error.0.contains("Item.added")
            && error.0.contains(".google.protobuf.Timestamp"),
        "{}",
        error.0
    );
}
