//! cellshm's async calls: `call_async` from a tokio current-thread caller, one call at a
//! time (beside the blocking `cellshm_64B_spin`) and 64 in flight (calls per second).

use std::time::Instant;

use cellshm::{CallOptions, Error, HubConfig, LinkEnd, Status, WaitStrategy};

use super::{BenchCell, Results};

fn runtime() -> Result<tokio::runtime::Runtime, Error> {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .map_err(|e| Error::new(Status::Internal, format!("starting tokio: {e}")))
}

/// One 64-byte echo at a time, awaited on a current-thread runtime.
pub fn one_at_a_time(r: &mut Results, n: usize) -> Result<(), Error> {
    let cell = BenchCell::spawn(HubConfig::default(), WaitStrategy::Spin)?;
    let peer = &cell.peer;
    let options = CallOptions::default();
    let payload = [7u8; 64];
    let samples = runtime()?.block_on(async {
        let mut samples = Vec::with_capacity(n);
        for i in 0..n + n / 10 {
            let t = Instant::now();
            let reply = peer.call_async("Echo.echo", &payload, &options).await?;
            assert_eq!(reply.len(), 64);
            if i >= n / 10 {
                samples.push(t.elapsed().as_nanos() as u64);
            }
        }
        Ok::<_, Error>(samples)
    })?;
    r.latency("cellshm_64B_async_tokio", samples);
    Ok(())
}

/// `IN_FLIGHT` echoes in flight at once from one task on a current-thread runtime: a
/// new call starts as each one completes; calls per second over `n` calls.
pub fn concurrent(r: &mut Results, n: usize) -> Result<(), Error> {
    const IN_FLIGHT: usize = 64;
    let cell = BenchCell::spawn(HubConfig::default(), WaitStrategy::Spin)?;
    let peer = &cell.peer;
    let options = CallOptions::default();
    let payload = [7u8; 64];
    let rate = runtime()?.block_on(async {
        use futures::stream::{FuturesUnordered, StreamExt};
        let mut in_flight = FuturesUnordered::new();
        let (mut started, mut done) = (0usize, 0usize);
        let clock = Instant::now();
        while done < n {
            while started < n && in_flight.len() < IN_FLIGHT {
                in_flight.push(peer.call_async("Echo.echo", &payload, &options));
                started += 1;
            }
            let reply = in_flight.next().await.expect("calls in flight")?;
            assert_eq!(reply.len(), 64);
            done += 1;
        }
        Ok::<_, Error>(n as f64 / clock.elapsed().as_secs_f64())
    })?;
    r.per_second("cellshm_64B_async_tokio_concurrent", rate);
    Ok(())
}
