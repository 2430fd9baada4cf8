//! A tokio host: spawns `async-cell`, then calls it with futures: a thousand lookups in
//! flight at once, a stream read as a `futures_core::Stream`, a stream written with
//! awaited sends, a call abandoned by a timeout (the cell sees the cancel), and a
//! graceful shutdown that is itself a future.
//!
//! ```text
//! async-host
//! ```

use std::process::Command;
use std::time::Duration;

use cellshm::prelude::*;
use futures::StreamExt;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    let hub = Hub::create(HubConfig::default())?;
    let cell =
        std::env::current_exe().map_err(|e| Error::system("locating async-cell", e))?.with_file_name("async-cell");
    let (peer, mut child) = hub.add_peer("feed", PeerOptions::default())?.spawn(&mut Command::new(cell))?;
    peer.wait_ready_async().await?;
    let options = CallOptions::timeout(Duration::from_secs(5));

    // A thousand calls in flight from one thread: each one's answer wakes its future.
    let lookups = (0..1000).map(|i| peer.call_async("Feed.lookup", format!("k{i}").as_bytes(), &options));
    let answers = futures::future::try_join_all(lookups).await?;
    println!("{} lookups, the last: {:?}", answers.len(), String::from_utf8_lossy(answers[999].bytes()));

    // Server streaming: items arrive as a Stream; a slow reader would slow only this stream.
    let mut numbers = peer.open_stream_async("Feed.numbers", &100u32.to_le_bytes(), &options).await?;
    let mut sum = 0u64;
    while let Some(item) = numbers.next().await {
        sum += u32::from_le_bytes(item?.bytes().try_into().expect("4 bytes")) as u64;
    }
    println!("Feed.numbers: 100 items, sum {sum}");

    // Client streaming: awaited sends wait for the cell's credit, not for a thread.
    let upload = peer.open_stream_async("Feed.total", b"", &options).await?;
    for _ in 0..50 {
        upload.send(&[1u8; 100]).await?;
    }
    let total = upload.finish().await?;
    println!("Feed.total: {}", u64::from_le_bytes(total.bytes().try_into().expect("8 bytes")));

    // Dropping a call's future cancels it: here tokio's timeout drops it.
    let abandoned =
        tokio::time::timeout(Duration::from_micros(100), peer.call_async("Feed.lookup", b"slow", &options)).await;
    println!("abandoned call: {}", if abandoned.is_err() { "cancelled by its timeout" } else { "answered first" });

    peer.shutdown_async(Duration::from_secs(2)).await;
    let status = child.wait().map_err(|e| Error::system("waiting for the cell", e))?;
    println!("feed: exited ({status})");
    Ok(())
}
