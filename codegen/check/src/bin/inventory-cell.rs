//! A cell serving `acme.inventory.v1.Inventory` (well-known types) from memory.

use cellshm::Cell;
use cellshm_codegen_check::inventory::{serve_inventory, MemoryInventory};

fn main() -> Result<(), cellshm::Error> {
    let cell = Cell::from_args()?;
    serve_inventory(&cell, MemoryInventory::default())?;
    cell.run()
}
