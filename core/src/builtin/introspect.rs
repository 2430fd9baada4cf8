//! `cellshm.Introspect.methods`: the (name, id) pairs a side serves, sorted by name,
//! the introspection method itself included; `cellshm.Introspect.descriptors`: the
//! `.proto` descriptors its generated services registered. Served like any method, from
//! the dispatcher they describe (registered by `host` and `cell` when they make theirs).

use std::sync::{Arc, Weak};

use crate::runtime::sync::RwLock;

use crate::error::{Error, Result};
use crate::runtime::session::Dispatcher;
use crate::wire::{builtin, decode_methods, encode_methods, MethodKind, Status};

/// Serves the introspection method on `dispatcher`, answering with what it serves.
pub(crate) fn serve_on(dispatcher: &Arc<RwLock<Dispatcher>>) -> Result<()> {
    // Weak: the dispatcher owns this handler.
    let described: Weak<RwLock<Dispatcher>> = Arc::downgrade(dispatcher);
    dispatcher.write().register(builtin::INTROSPECT_METHODS, move |call| {
        let methods = described.upgrade().map(|d| d.read().methods_and_kinds()).unwrap_or_default();
        call.reply(&answer(methods))
    })?;
    let described: Weak<RwLock<Dispatcher>> = Arc::downgrade(dispatcher);
    dispatcher.write().register(builtin::INTROSPECT_DESCRIPTORS, move |call| {
        let descriptors = described.upgrade().map(|d| d.read().descriptors()).unwrap_or_default();
        call.reply(&descriptors)
    })
}

/// The answer to an introspection call, given the methods the dispatcher serves.
pub(crate) fn answer(mut methods: Vec<(String, u32, MethodKind)>) -> Vec<u8> {
    let this = (builtin::INTROSPECT_METHODS.to_string(), builtin::INTROSPECT_METHODS_ID, MethodKind::Unary);
    if !methods.contains(&this) {
        methods.push(this);
    }
    methods.sort_by(|a, b| a.0.cmp(&b.0));
    encode_methods(&methods)
}

/// The caller's reading of an introspection answer.
pub(crate) fn decode(answer: &[u8]) -> Result<Vec<(String, u32, MethodKind)>> {
    decode_methods(answer).map_err(|m| Error::new(Status::ProtocolError, m))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_answer_lists_every_method_sorted_with_itself() {
        let body = answer(vec![("Echo.echo".into(), 7, MethodKind::Unary), ("A.a".into(), 9, MethodKind::Bidi)]);
        let listed: Vec<(String, MethodKind)> = decode(&body).unwrap().into_iter().map(|(n, _, k)| (n, k)).collect();
        let want = [
            ("A.a", MethodKind::Bidi),
            ("Echo.echo", MethodKind::Unary),
            (builtin::INTROSPECT_METHODS, MethodKind::Unary),
        ];
        assert_eq!(listed, want.map(|(n, k)| (n.to_string(), k)));
        let listed_already =
            vec![(builtin::INTROSPECT_METHODS.to_string(), builtin::INTROSPECT_METHODS_ID, MethodKind::Unary)];
        assert_eq!(decode(&answer(listed_already)).unwrap().len(), 1, "listed once");
        assert_eq!(decode(&body[..body.len() - 1]).unwrap_err().status(), Status::ProtocolError);
    }
}
