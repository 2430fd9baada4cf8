//! The join record: what the host sends a cell over its doorbell, with the link's two
//! memfds attached (SCM_RIGHTS, host memory first, read-only; then cell memory,
//! read-write). It is the first message on every doorbell; `docs/PROTOCOL.md` §2.

use super::layout::{Geometry, SlotClass, LAYOUT_MAJOR, MAX_CLASSES, MAX_PEERS};

/// Bytes of an encoded join record.
pub const JOIN_RECORD_LEN: usize = 176;
/// First 8 bytes of a join record.
pub const JOIN_MAGIC: [u8; 8] = *b"CSHMJOIN";
/// Longest hub name carried (bytes of UTF-8).
pub const HUB_NAME_MAX: usize = 64;

/// What a cell learns when it joins.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JoinRecord {
    /// The layout's minor version the host wrote both memfds' headers with (a host of a
    /// later minor still starts cells of an earlier one: minors only add).
    pub layout_minor: u16,
    /// Our peer slot.
    pub peer_id: u32,
    /// The slot's launch counter; echoed in HELLO.
    pub epoch: u32,
    /// The host's process id (as the host's kernel namespace sees it).
    pub host_pid: u32,
    /// The hub's name (for messages and `cellshm list`).
    pub hub_name: String,
    /// Ring and pool shape of both memfds.
    pub geometry: Geometry,
}

impl JoinRecord {
    /// Encodes the record (little-endian, every reserved byte zero).
    pub fn encode(&self) -> [u8; JOIN_RECORD_LEN] {
        let mut out = [0u8; JOIN_RECORD_LEN];
        let mut put = |off: usize, bytes: &[u8]| out[off..off + bytes.len()].copy_from_slice(bytes);
        put(0, &JOIN_MAGIC);
        put(8, &LAYOUT_MAJOR.to_le_bytes());
        put(10, &self.layout_minor.to_le_bytes());
        put(12, &self.peer_id.to_le_bytes());
        put(16, &self.epoch.to_le_bytes());
        put(20, &self.host_pid.to_le_bytes());
        put(24, &self.geometry.ring_capacity.to_le_bytes());
        put(28, &(self.geometry.classes.len() as u32).to_le_bytes());
        put(96, &self.geometry.side_layout().size.to_le_bytes());
        let mut cut = self.hub_name.len().min(HUB_NAME_MAX);
        while !self.hub_name.is_char_boundary(cut) {
            cut -= 1;
        }
        put(104, &(cut as u32).to_le_bytes());
        put(112, &self.hub_name.as_bytes()[..cut]);
        self.geometry.put_classes(&mut out[32..32 + 8 * MAX_CLASSES]);
        out
    }

    /// Decodes and validates a record; the message says what is wrong.
    pub fn decode(bytes: &[u8]) -> Result<JoinRecord, String> {
        if bytes.len() != JOIN_RECORD_LEN {
            return Err(format!("a join record is {JOIN_RECORD_LEN} bytes, this message is {}", bytes.len()));
        }
        if bytes[..8] != JOIN_MAGIC {
            return Err("the first doorbell message is not a join record (bad magic)".into());
        }
        let u16_at = |o: usize| u16::from_le_bytes([bytes[o], bytes[o + 1]]);
        let u32_at = |o: usize| u32::from_le_bytes(bytes[o..o + 4].try_into().unwrap_or_default());
        let (major, minor) = (u16_at(8), u16_at(10));
        if major != LAYOUT_MAJOR {
            return Err(format!("the host speaks layout {major}.{minor}, this library {LAYOUT_MAJOR}.x"));
        }
        let peer_id = u32_at(12);
        if peer_id >= MAX_PEERS {
            return Err(format!("peer id {peer_id} is out of range"));
        }
        let class_count = u32_at(28) as usize;
        if class_count == 0 || class_count > MAX_CLASSES {
            return Err(format!("the join record names {class_count} slot classes"));
        }
        let geometry = Geometry {
            ring_capacity: u32_at(24),
            classes: (0..class_count)
                .map(|i| SlotClass { slot_size: u32_at(32 + i * 8), slot_count: u32_at(36 + i * 8) })
                .collect(),
        };
        geometry.validate().map_err(|m| format!("invalid geometry in the join record: {m}"))?;
        let size = u64::from_le_bytes(bytes[96..104].try_into().unwrap_or_default());
        if size != geometry.side_layout().size {
            return Err(format!(
                "the join record states {size} bytes per memfd, its geometry needs {}",
                geometry.side_layout().size
            ));
        }
        let name_len = u32_at(104) as usize;
        if name_len > HUB_NAME_MAX {
            return Err(format!("hub name of {name_len} bytes (max {HUB_NAME_MAX})"));
        }
        let hub_name = std::str::from_utf8(&bytes[112..112 + name_len])
            .map_err(|_| "the hub name is not UTF-8".to_string())?
            .to_string();
        Ok(JoinRecord { layout_minor: minor, peer_id, epoch: u32_at(16), host_pid: u32_at(20), hub_name, geometry })
    }
}

#[cfg(test)]
mod tests {
    use super::super::layout::LAYOUT_MINOR;
    use super::*;

    fn record() -> JoinRecord {
        JoinRecord {
            layout_minor: LAYOUT_MINOR,
            peer_id: 3,
            epoch: 9,
            host_pid: 1234,
            hub_name: "demo".into(),
            geometry: Geometry { ring_capacity: 8, classes: vec![SlotClass { slot_size: 256, slot_count: 4 }] },
        }
    }

    #[test]
    fn round_trips_and_refuses_garbage() {
        let r = record();
        let bytes = r.encode();
        assert_eq!(JoinRecord::decode(&bytes).unwrap(), r);
        assert!(JoinRecord::decode(&bytes[..100]).unwrap_err().contains("176 bytes"));
        let mut bad = bytes;
        bad[0] = b'X';
        assert!(JoinRecord::decode(&bad).unwrap_err().contains("magic"));
        let mut bad = bytes;
        bad[8] = 1;
        assert!(JoinRecord::decode(&bad).unwrap_err().contains("layout 1.0"));
        let mut bad = bytes;
        bad[24] = 6;
        assert!(JoinRecord::decode(&bad).unwrap_err().contains("power of two"));
        let mut bad = bytes;
        bad[96] ^= 0x40;
        assert!(JoinRecord::decode(&bad).unwrap_err().contains("bytes per memfd"));
        let mut bad = bytes;
        bad[104] = 200;
        assert!(JoinRecord::decode(&bad).unwrap_err().contains("hub name"));
        let mut bad = bytes;
        bad[112] = 0xff;
        assert!(JoinRecord::decode(&bad).unwrap_err().contains("UTF-8"));
    }
}
