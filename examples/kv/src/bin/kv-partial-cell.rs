//! A cell that serves only `kv.Store.Get` and `kv.Store.Put`, registered by hand with
//! `cellshm::typed` (no generated trait): what a client's contract check catches. With
//! `--watch-as-unary` it also serves `kv.Store.Watch`, as a unary method (the wrong kind).

use cellshm::typed::serve_unary;
use cellshm::Registry;
use cellshm::{Cell, Error, Status};
use cellshm_kv_example::kv::{self, GetReply, GetRequest, PutReply, PutRequest};

fn main() -> Result<(), Error> {
    let cell = Cell::from_args()?;
    cell.method(kv::store_methods::GET.name, |call| {
        serve_unary(call, kv::store_methods::GET.name, |_, request: GetRequest| -> Result<GetReply, Error> {
            Err(Error::new(Status::NotFound, format!("no key {:?}", request.key)))
        })
    })?;
    cell.method(kv::store_methods::PUT.name, |call| {
        serve_unary(call, kv::store_methods::PUT.name, |_, _request: PutRequest| Ok(PutReply::default()))
    })?;
    if std::env::args().any(|a| a == "--watch-as-unary") {
        cell.method(kv::store_methods::WATCH.name, |call| call.reply(b""))?;
    }
    cell.run()
}
