fn main() -> std::io::Result<()> {
    // prost messages and the cellshm client, trait and registration of kv.Store, into
    // OUT_DIR/kv.rs (no protoc needed).
    cellshm_codegen::compile_protos(&["../proto/kv.proto"], &["../proto"])
}
