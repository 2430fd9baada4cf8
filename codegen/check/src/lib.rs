//! The generator's Rust output for `codegen/tests/protos`, compiled: packages with
//! dots, imports, well-known types, nested types, keyword method names, an empty
//! service and no package. The tests implement the generated traits, so a signature the
//! generator got wrong fails to build here.

#![allow(missing_docs, missing_debug_implementations)]

pub mod shapes {
    pub mod common {
        include!(concat!(env!("OUT_DIR"), "/shapes.common.rs"));
    }
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/shapes.v1.rs"));
    }
}

/// No package: prost names it `_.rs`.
pub mod plain {
    include!(concat!(env!("OUT_DIR"), "/_.rs"));
}

/// A service of well-known types (Timestamp, Duration, Empty, Any, Struct, a wrapper),
/// included with `cellshm::include_proto!`; served by the `inventory-cell` binary and
/// called across processes by `tests/inventory.rs`.
pub mod inventory {
    cellshm::include_proto!("acme.inventory.v1");

    use std::collections::BTreeMap;
    use std::sync::Mutex;
    use std::time::{Instant, SystemTime};

    use cellshm::typed::ServerStream;
    use cellshm::{Call, Error, Result, Status};

    /// `acme.inventory.v1.Inventory` in memory.
    #[derive(Debug)]
    pub struct MemoryInventory {
        items: Mutex<BTreeMap<String, Item>>,
        started: Instant,
    }

    impl Default for MemoryInventory {
        fn default() -> Self {
            MemoryInventory { items: Mutex::default(), started: Instant::now() }
        }
    }

    impl Inventory for MemoryInventory {
        fn put(&self, _call: &Call<'_>, item: Item) -> Result<prost_types::Timestamp> {
            let now = prost_types::Timestamp::from(SystemTime::now());
            self.items.lock().unwrap().insert(item.id.clone(), item);
            Ok(now)
        }
        fn get(&self, _call: &Call<'_>, id: String) -> Result<Item> {
            self.items.lock().unwrap().get(&id).cloned().ok_or_else(|| Error::new(Status::NotFound, id))
        }
        fn uptime(&self, _call: &Call<'_>, _request: ()) -> Result<prost_types::Duration> {
            prost_types::Duration::try_from(self.started.elapsed())
                .map_err(|e| Error::new(Status::Internal, e.to_string()))
        }
        fn list(&self, _request: (), stream: &mut ServerStream<'_, (), Item>) -> Result<()> {
            let items: Vec<Item> = self.items.lock().unwrap().values().cloned().collect();
            for item in &items {
                stream.send(item)?;
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::shapes::common::Point;
    use super::shapes::v1::{self, figure, Figure};
    use cellshm::typed::{MethodKind, ServerStream};
    use cellshm::{Call, Result};
    use prost::Message;

    struct Drawer;

    impl v1::Drawing for Drawer {
        fn draw(&self, _call: &Call<'_>, _request: Figure) -> Result<()> {
            Ok(())
        }
        fn r#type(&self, _call: &Call<'_>, request: figure::Segment) -> Result<Point> {
            Ok(request.to.unwrap_or_default())
        }
        fn r#match(&self, stream: &mut ServerStream<'_, Figure, figure::Segment>) -> Result<()> {
            while let Some(f) = stream.recv()? {
                for s in f.segments {
                    stream.send(&s)?;
                }
            }
            Ok(())
        }
        fn r#loop(&self, _request: (), stream: &mut ServerStream<'_, (), prost_types::Timestamp>) -> Result<()> {
            stream.send(&prost_types::Timestamp::default())
        }
    }

    struct Nothing;
    impl v1::Empty for Nothing {}

    struct Pinger;
    impl super::plain::Plain for Pinger {
        fn ping(&self, _call: &Call<'_>, request: super::plain::Ping) -> Result<super::plain::Ping> {
            Ok(request)
        }
        fn get_http_status(&self, _call: &Call<'_>, request: super::plain::Ping) -> Result<super::plain::Ping> {
            Ok(request)
        }
    }

    #[test]
    fn the_generated_tables_name_methods_as_cellshm_calls_them() {
        let all = v1::drawing_methods::ALL;
        let names: Vec<&str> = all.iter().map(|m| m.name).collect();
        assert_eq!(
            names,
            ["shapes.v1.Drawing.Draw", "shapes.v1.Drawing.type", "shapes.v1.Drawing.match", "shapes.v1.Drawing.Loop"]
        );
        assert!(all.iter().all(|m| m.id == cellshm::method_id(m.name)));
        let kinds: Vec<MethodKind> = all.iter().map(|m| m.kind).collect();
        assert_eq!(kinds, [MethodKind::Unary, MethodKind::Unary, MethodKind::Bidi, MethodKind::ServerStreaming]);
        assert_eq!(super::plain::plain_methods::GET_HTTP_STATUS.name, "Plain.GetHTTPStatus");
        assert!(v1::empty_methods::ALL.is_empty());
        // The traits are implementable as generated (this compiles), and the messages
        // are prost's, nested types and oneofs included.
        let _ = (Drawer, Nothing, Pinger);
        let f = Figure {
            label: Some(figure::Label::Text("hi".into())),
            style: figure::Style::Dashed as i32,
            ..Default::default()
        };
        assert_eq!(Figure::decode(f.encode_to_vec().as_slice()).unwrap(), f);
    }

    #[test]
    fn a_hub_serves_a_generated_service_and_refuses_a_second_registration() {
        let hub = cellshm::Hub::create(cellshm::HubConfig::default()).unwrap();
        v1::serve_drawing(&hub, Drawer).unwrap();
        v1::serve_empty(&hub, Nothing).unwrap();
        let e = v1::serve_drawing(&hub, Drawer).unwrap_err();
        assert_eq!(e.status(), cellshm::Status::AlreadyExists);
        assert!(e.message().contains("shapes.v1.Drawing.Draw"), "{e}");
    }
}
