//! `kv-host CELL [ARGS...]`: spawns a cell that serves `kv.Store` (Rust, Python or C++)
//! and calls every method of it through the generated client.

use std::process::Command;
use std::time::Duration;

use cellshm::{CallOptions, Hub, HubConfig, PeerOptions, Status};
use cellshm_kv_example::kv::{ChatMessage, Chunk, GetRequest, PutRequest, StoreClient, WatchRequest};

fn main() -> Result<(), cellshm::Error> {
    let mut args = std::env::args().skip(1);
    let Some(program) = args.next() else {
        eprintln!("usage: kv-host CELL [ARGS...]");
        std::process::exit(2);
    };
    let hub = Hub::create(HubConfig::default())?;
    let ticket = hub.add_peer("kv", PeerOptions::default())?;
    let (peer, mut child) = ticket.spawn(Command::new(program).args(args))?;
    peer.wait_ready(Duration::from_secs(10))?;

    // Checks that the cell serves every method of kv.Store, then calls with a timeout.
    let store =
        StoreClient::connect(&peer, Duration::from_secs(5))?.with_options(CallOptions::timeout(Duration::from_secs(5)));
    let first = store.put(&PutRequest { key: "fruit/apple".into(), value: b"red".to_vec() })?;
    // The changes after the first put, under fruit/: the third put, then whatever comes.
    let watch = store.watch(&WatchRequest { prefix: "fruit/".into(), max_events: 2, since: first.sequence })?;
    store.put(&PutRequest { key: "veg/leek".into(), value: b"green".to_vec() })?;
    let previous = store.put(&PutRequest { key: "fruit/apple".into(), value: b"green".to_vec() })?.previous;
    println!("put fruit/apple twice; it was {:?}", previous.map(String::from_utf8));
    store.put(&PutRequest { key: "fruit/pear".into(), value: b"yellow".to_vec() })?;
    for event in watch {
        let event = event?;
        println!("watch: #{} {} = {:?}", event.sequence, event.key, String::from_utf8_lossy(&event.value));
    }
    let got = store.get(&GetRequest { key: "fruit/apple".into() })?;
    println!("get fruit/apple: {:?}", String::from_utf8_lossy(&got.value));
    match store.get(&GetRequest { key: "nothing".into() }) {
        Err(e) if e.status() == Status::NotFound => println!("get nothing: {e}"),
        other => println!("get nothing: unexpected {other:?}"),
    }
    let upload = store.upload()?;
    for part in ["log line 1\n", "log line 2\n"] {
        upload.send(&Chunk { key: "log".into(), data: part.as_bytes().to_vec() })?;
    }
    let reply = upload.finish()?;
    println!("upload: {} chunks, {} bytes", reply.chunks, reply.bytes);
    let chat = store.chat()?;
    for text in ["hello", "bye"] {
        chat.send(&ChatMessage { text: text.into() })?;
        if let Some(answer) = chat.recv()? {
            println!("chat: {}", answer.text);
        }
    }
    chat.close_send()?;
    while chat.recv()?.is_some() {}
    peer.shutdown(Duration::from_secs(2));
    let _ = child.wait();
    Ok(())
}
