//! The pass-through codec: a gRPC message is its bytes, never decoded.

use bytes::{Buf, BufMut, Bytes};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

/// A tonic codec whose messages are their bytes: what the gateway forwards without
/// knowing the `.proto` (and what a client uses to call any method by path).
#[derive(Clone, Copy, Debug, Default)]
pub struct RawCodec;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> RawCodec {
        RawCodec
    }

    fn decoder(&mut self) -> RawCodec {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Bytes;
    type Error = tonic::Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Bytes;
    type Error = tonic::Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, tonic::Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

/// A message the gateway sends, still in a cell's shared memory (a stream item, a call's
/// response): copied once, straight into the HTTP/2 frame buffer.
pub(crate) enum Outgoing {
    Item(cellshm::StreamItem),
    Response(cellshm::Response),
}

/// The gateway's codec: requests arrive as bytes ([`RawCodec`]'s decoder), responses
/// leave as [`Outgoing`].
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct GatewayCodec;

impl Codec for GatewayCodec {
    type Encode = Outgoing;
    type Decode = Bytes;
    type Encoder = GatewayCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> GatewayCodec {
        GatewayCodec
    }

    fn decoder(&mut self) -> RawCodec {
        RawCodec
    }
}

impl Encoder for GatewayCodec {
    type Item = Outgoing;
    type Error = tonic::Status;

    fn encode(&mut self, item: Outgoing, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        match item {
            Outgoing::Item(item) => put_shared(item.payload(), dst),
            Outgoing::Response(response) => put_shared(response.payload(), dst),
        }
        Ok(())
    }
}

/// Appends `payload` to `dst` with one copy out of shared memory (no zeroing first, no
/// private copy in between).
fn put_shared(payload: cellshm::SharedBytes<'_>, dst: &mut EncodeBuf<'_>) {
    let len = payload.len();
    dst.reserve(len);
    // SAFETY: copy_to_uninit only writes the spare bytes it is given, never
    // de-initialising any, which is what as_uninit_slice_mut asks of its caller.
    let spare = unsafe { dst.chunk_mut().as_uninit_slice_mut() };
    payload.copy_to_uninit(0, &mut spare[..len]);
    // SAFETY: the first `len` spare bytes were initialised just above.
    unsafe { dst.advance_mut(len) };
}
