//! A cell serving `kv.Store` with async handlers on a tokio runtime (started by a host,
//! never by hand): `kv::serve_store_async` and `AsyncMemoryStore`.

use cellshm::{Cell, Registry};
use cellshm_kv_example::{kv, AsyncMemoryStore};

fn main() -> Result<(), cellshm::Error> {
    let runtime = tokio::runtime::Runtime::new().map_err(|e| cellshm::Error::system("starting tokio", e))?;
    let cell = Cell::from_args()?;
    cell.spawn_handlers_on(runtime.handle().clone());
    kv::serve_store_async(&cell, AsyncMemoryStore::default())?;
    // The server threads receive; the handlers' futures run on the runtime.
    cell.run()
}
