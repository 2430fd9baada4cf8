//! cellshm's errors as gRPC statuses: codes 0–16 are gRPC's own and pass 1:1 with their
//! messages; cellshm's statuses about a link (≥ 100) become the nearest gRPC code, the
//! original in the `cellshm-status` metadata key.

use cellshm::{Error, Status};

/// The metadata key (a trailer) that carries the original cellshm status of an error
/// whose code is cellshm's own: `"<code> <NAME>"`, e.g. `"100 PEER_DEAD"`.
pub const STATUS_METADATA: &str = "cellshm-status";

/// The nearest gRPC code of a cellshm status.
fn grpc_code(status: Status) -> tonic::Code {
    match status {
        Status::PeerDead | Status::SessionClosed | Status::HubFull => tonic::Code::Unavailable,
        Status::PayloadTooLarge => tonic::Code::ResourceExhausted,
        Status::ProtocolError | Status::SystemError => tonic::Code::Internal,
        other => tonic::Code::from_i32(other.code() as i32),
    }
}

/// `error` as the gRPC status a client sees.
pub fn to_grpc_status(error: &Error) -> tonic::Status {
    let code = error.code();
    if code <= 16 {
        return tonic::Status::new(tonic::Code::from_i32(code as i32), error.message());
    }
    let mut status = tonic::Status::new(grpc_code(error.status()), error.message());
    let original = format!("{code} {}", error.status());
    if let Ok(value) = original.parse() {
        status.metadata_mut().insert(STATUS_METADATA, value);
    }
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_codes_pass_and_cellshm_s_own_map_to_the_nearest_with_the_original() {
        let e = to_grpc_status(&Error::new(Status::NotFound, "no key"));
        assert_eq!((e.code(), e.message()), (tonic::Code::NotFound, "no key"));
        assert!(e.metadata().get(STATUS_METADATA).is_none());
        for (status, code) in [
            (Status::PeerDead, tonic::Code::Unavailable),
            (Status::SessionClosed, tonic::Code::Unavailable),
            (Status::PayloadTooLarge, tonic::Code::ResourceExhausted),
            (Status::ProtocolError, tonic::Code::Internal),
            (Status::HubFull, tonic::Code::Unavailable),
            (Status::SystemError, tonic::Code::Internal),
        ] {
            let e = to_grpc_status(&Error::new(status, "why"));
            assert_eq!((e.code(), e.message()), (code, "why"), "{status:?}");
            let original = e.metadata().get(STATUS_METADATA).unwrap().to_str().unwrap().to_string();
            assert_eq!(original, format!("{} {status}", status.code()));
        }
    }
}
