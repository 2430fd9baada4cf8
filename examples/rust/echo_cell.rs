//! A cell serving `Echo.echo` (and `Echo.reverse`). Started by a host, never by hand:
//! the host hands it a doorbell (`CELLSHM_DOORBELL_FD`) and the join record arrives on it.

use cellshm::Cell;

fn main() -> Result<(), cellshm::Error> {
    let cell = Cell::from_args()?;
    // The request is read in place from shared memory; the reply is written in place.
    cell.method("Echo.echo", |call| {
        let request = call.payload();
        call.reply_with(request.len(), |buf| {
            buf.copy_from_slice(request);
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
