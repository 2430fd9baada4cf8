//! Other IPC libraries measured beside cellshm, in the same run: iceoryx2's
//! request-response (the `iceoryx2` crate from crates.io), busy-polling on both sides,
//! 64-byte requests echoed back, two processes.

use std::process::Command;
use std::time::Instant;

use cellshm::{Error, Status};
use iceoryx2::prelude::*;

type Payload = [u8; 64];
/// The first byte of the last request: the server answers it and leaves.
const LAST: u8 = 0xFF;

fn failed(what: &str, e: impl std::fmt::Display) -> Error {
    Error::new(Status::Internal, format!("iceoryx2: {what}: {e}"))
}

/// The service of one run: named after the client's pid, so that runs never meet.
fn service(
    node: &Node<ipc::Service>,
    name: &str,
) -> Result<iceoryx2::service::port_factory::request_response::PortFactory<ipc::Service, Payload, (), Payload, ()>, Error>
{
    let name: ServiceName = name.try_into().map_err(|e| failed("service name", e))?;
    node.service_builder(&name)
        .request_response::<Payload, Payload>()
        .open_or_create()
        .map_err(|e| failed("opening the service", e))
}

fn node() -> Result<Node<ipc::Service>, Error> {
    // Its default configuration is what we measure; it says so at Warn level.
    set_log_level(LogLevel::Error);
    NodeBuilder::new().create::<ipc::Service>().map_err(|e| failed("creating a node", e))
}

/// `iterations` round trips after a tenth as many to warm up, against a server in a child
/// process (`cellshm-bench __iceoryx2-server NAME`).
pub fn iceoryx2_request_response(iterations: usize) -> Result<Vec<u64>, Error> {
    let name = format!("cellshm-bench/iceoryx2-rr/{}", std::process::id());
    let node = node()?;
    let service = service(&node, &name)?;
    let client = service.client_builder().create().map_err(|e| failed("creating the client", e))?;
    let mut child = Command::new(super::self_exe()?)
        .args(["__iceoryx2-server", &name])
        .spawn()
        .map_err(|e| Error::system("spawning the iceoryx2 server", e))?;
    let started = Instant::now();
    while service.dynamic_config().number_of_servers() == 0 {
        if started.elapsed().as_secs() >= 10 || matches!(child.try_wait(), Ok(Some(_))) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(Error::new(Status::Unavailable, "the iceoryx2 server did not start"));
        }
        std::thread::yield_now();
    }
    let warmup = iterations / 10;
    let round_trip = |payload: Payload| -> Result<(), Error> {
        let pending = client.send_copy(payload).map_err(|e| failed("sending", e))?;
        loop {
            if let Some(response) = pending.receive().map_err(|e| failed("receiving", e))? {
                assert_eq!(response.payload()[1], payload[1]);
                return Ok(());
            }
            std::hint::spin_loop();
        }
    };
    let mut samples = Vec::with_capacity(iterations);
    for i in 0..warmup + iterations {
        let t = Instant::now();
        round_trip([7u8; 64])?;
        if i >= warmup {
            samples.push(t.elapsed().as_nanos() as u64);
        }
    }
    let mut last = [7u8; 64];
    last[0] = LAST;
    round_trip(last)?;
    let _ = child.wait();
    Ok(samples)
}

/// The server: echoes every request, busy-polling, until the last one.
pub fn iceoryx2_server(args: &[String]) -> Result<(), Error> {
    let name = args.first().ok_or_else(|| Error::new(Status::InvalidArgument, "usage: __iceoryx2-server NAME"))?;
    let node = node()?;
    let service = service(&node, name)?;
    let server = service.server_builder().create().map_err(|e| failed("creating the server", e))?;
    loop {
        match server.receive().map_err(|e| failed("receiving", e))? {
            Some(request) => {
                let payload = *request.payload();
                request.send_copy(payload).map_err(|e| failed("answering", e))?;
                if payload[0] == LAST {
                    return Ok(());
                }
            }
            None => std::hint::spin_loop(),
        }
    }
}
