//! The typed path's cost: `kv.Store.Get` through the generated client and handler trait,
//! answering a fixed 64-byte value, beside a raw 64 B `Echo.echo` of the same cell.

use cellshm::typed::ServerStream;
use cellshm::{Call, Error, Result, Status};
use cellshm_kv_example::kv::{
    self, ChatMessage, Chunk, Event, GetReply, GetRequest, PutReply, PutRequest, UploadReply, WatchRequest,
};

/// Answers every Get with the same 64 bytes; nothing else.
pub struct FixedStore;

fn unimplemented(what: &str) -> Error {
    Error::new(Status::Unimplemented, format!("{what} is not part of the benchmark"))
}

impl kv::Store for FixedStore {
    fn get(&self, _call: &Call<'_>, _request: GetRequest) -> Result<GetReply> {
        Ok(GetReply { found: true, value: vec![7; 64] })
    }
    fn put(&self, _call: &Call<'_>, _request: PutRequest) -> Result<PutReply> {
        Err(unimplemented("Put"))
    }
    fn watch(&self, _request: WatchRequest, _stream: &mut ServerStream<'_, (), Event>) -> Result<()> {
        Err(unimplemented("Watch"))
    }
    fn upload(&self, _stream: &mut ServerStream<'_, Chunk, ()>) -> Result<UploadReply> {
        Err(unimplemented("Upload"))
    }
    fn chat(&self, _stream: &mut ServerStream<'_, ChatMessage, ChatMessage>) -> Result<()> {
        Err(unimplemented("Chat"))
    }
}

/// The bench's cell: the test kit's test cell, serving `kv.Store` (FixedStore) too.
pub fn bench_cell(extra_args: &[String]) -> Result<()> {
    if let Some(extra) = extra_args.first() {
        return Err(Error::new(Status::InvalidArgument, format!("the bench cell takes no arguments, got {extra:?}")));
    }
    let cell = cellshm::Cell::from_args()?;
    kv::serve_store(&cell, FixedStore)?;
    cellshm_testkit::test_cell(cell)
}
