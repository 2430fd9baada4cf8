//! A cell serving `kv.Store` from memory (started by a host, never by hand).

use cellshm::Cell;
use cellshm_kv_example::{kv, MemoryStore};

fn main() -> Result<(), cellshm::Error> {
    let cell = Cell::from_args()?;
    kv::serve_store(&cell, MemoryStore::default())?;
    cell.run()
}
