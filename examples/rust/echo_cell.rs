//! A cell serving `Echo.echo` (and `Echo.reverse`). Started by a host, never by hand:
//! the host hands it a bootstrap socket (`CELLSHM_DOORBELL_FD`) on which it asks for its link.

use cellshm::Cell;
use cellshm::Registry;

fn main() -> Result<(), cellshm::Error> {
    let cell = Cell::from_args()?;
    // The request is copied straight from the caller's shared memory into the reply,
    // which is written in place. (`call.request()` reads without making a Rust
    // reference of memory the caller can still write; `call.payload()` gives a private
    // copy as `&[u8]`.)
    cell.method("Echo.echo", |call| {
        let request = call.request();
        call.reply_with(request.len(), |buf| {
            request.copy_to_slice(0, buf);
            request.len()
        })
    })?;
    cell.method("Echo.reverse", |call| {
        let mut reversed = call.payload().to_vec();
        reversed.reverse();
        call.reply(&reversed)
    })?;
    // Serves until the host says goodbye; exits with an error if the host goes away.
    cell.run()
}
