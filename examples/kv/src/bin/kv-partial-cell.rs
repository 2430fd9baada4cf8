//! A cell that serves only `kv.Store.Get` and `kv.Store.Put`, registered by hand with
//! `cellshm::typed` (no generated trait): what a client's contract check catches.

use cellshm::typed::serve_unary;
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
    cell.run()
}
