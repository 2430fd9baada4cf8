fn main() -> std::io::Result<()> {
    cellshm_codegen::compile_protos(
        &[
            "../tests/protos/shapes/drawing.proto",
            "../tests/protos/shapes/common.proto",
            "../tests/protos/plain.proto",
            "../tests/protos/wkt/inventory.proto",
        ],
        &["../tests/protos"],
    )
}
