//! `cellshm.Introspect.methods`: the (name, id) pairs a side serves, sorted by name,
//! the introspection method itself included.

use crate::error::{Error, Result};
use crate::wire::{builtin, decode_methods, encode_methods, Status};

/// The answer to an introspection call, given the methods the dispatcher serves.
pub(crate) fn answer(mut methods: Vec<(String, u32)>) -> Vec<u8> {
    methods.push((builtin::INTROSPECT_METHODS.to_string(), builtin::INTROSPECT_METHODS_ID));
    methods.sort();
    encode_methods(&methods)
}

/// The caller's reading of an introspection answer.
pub(crate) fn decode(answer: &[u8]) -> Result<Vec<(String, u32)>> {
    decode_methods(answer).map_err(|m| Error::new(Status::ProtocolError, m))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_answer_lists_every_method_sorted_with_itself() {
        let body = answer(vec![("Echo.echo".into(), 7), ("A.a".into(), 9)]);
        let names: Vec<String> = decode(&body).unwrap().into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["A.a", "Echo.echo", builtin::INTROSPECT_METHODS]);
        assert_eq!(decode(&body[..body.len() - 1]).unwrap_err().status(), Status::ProtocolError);
    }
}
