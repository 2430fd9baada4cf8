//! An async cell on tokio: `Feed.lookup` is an `async fn` that awaits a timer (a stand-in
//! for a database) and honours its caller's cancel and deadline; `Feed.numbers` streams
//! numbers, each send awaiting the caller's credit; `Feed.total` sums what the caller
//! streams. Started by `async-host`, never by hand.

use std::time::Duration;

use cellshm::prelude::*;

fn main() -> Result<(), Error> {
    let runtime = tokio::runtime::Runtime::new().map_err(|e| Error::system("starting tokio", e))?;
    let cell = Cell::from_args()?;
    // Handlers' futures run on this runtime; the cell's server threads only receive.
    cell.spawn_handlers_on(runtime.handle().clone());
    cell.method_async("Feed.lookup", |call| async move {
        let key = String::from_utf8_lossy(call.payload()).into_owned();
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(2)) => Ok(format!("value of {key}").into_bytes()),
            () = call.cancelled() => Err(Error::new(Status::Cancelled, "the caller gave up")),
        }
    })?;
    cell.stream_method_async("Feed.numbers", MethodKind::ServerStreaming, |call| async move {
        let count =
            u32::from_le_bytes(call.request().try_into().map_err(|_| Error::new(Status::InvalidArgument, "a u32"))?);
        for i in 0..count {
            call.send(&i.to_le_bytes()).await?;
        }
        Ok(Vec::new())
    })?;
    cell.stream_method_async("Feed.total", MethodKind::ClientStreaming, |call| async move {
        let mut total = 0u64;
        while let Some(item) = call.recv().await? {
            total += item.bytes().iter().map(|b| *b as u64).sum::<u64>();
        }
        Ok(total.to_le_bytes().to_vec())
    })?;
    cell.run()
}
