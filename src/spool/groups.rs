//! What is known in memory of the stored groups: which of their events the broker has
//! already confirmed.

use std::collections::BTreeMap;
use std::sync::Mutex;

/// One stored group's confirmations. A group is deleted from disk once all of its events
/// are confirmed; until then the confirmed ones are skipped by reads. (After a crash a
/// partly confirmed group is published again in full, under the same message ids: at
/// least once, never lost.)
pub struct GroupState {
    pub len: u32,
    /// Bytes of its records (what counts against `spool.max_bytes`).
    pub bytes: u64,
    /// Events not yet confirmed.
    pub left: u32,
    /// One bit per event, set once confirmed; empty until the first one is.
    pub confirmed: Vec<u64>,
}

impl GroupState {
    pub fn new(len: u32, bytes: u64) -> Self {
        Self {
            len,
            bytes,
            left: len,
            confirmed: Vec::new(),
        }
    }

    pub fn is_confirmed(&self, i: u32) -> bool {
        self.left == 0 || bit(&self.confirmed, i as usize)
    }

    /// Marks event `i`; false if it was already.
    pub fn confirm(&mut self, i: u32) -> bool {
        if self.is_confirmed(i) {
            return false;
        }
        if self.confirmed.is_empty() {
            self.confirmed = vec![0; (self.len as usize).div_ceil(64)];
        }
        self.confirmed[i as usize / 64] |= 1 << (i % 64);
        self.left -= 1;
        true
    }
}

/// Bit `i` of a confirmation bitmap.
pub fn bit(bits: &[u64], i: usize) -> bool {
    bits.get(i / 64).is_some_and(|w| w & (1 << (i % 64)) != 0)
}

/// A group about to be stored.
pub struct NewGroup {
    pub first: u64,
    pub value: Vec<u8>,
}

/// Groups with some of their events confirmed, by first seq: only those. A group nobody
/// has confirmed anything of costs no memory (a long outage can spool a million events
/// one group each).
pub type Partial = Mutex<BTreeMap<u64, GroupState>>;
