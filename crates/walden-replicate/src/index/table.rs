//! The compact hash table behind the row index: key → [`Loc`].
//!
//! A table is split into 2^bits shards by the top bits of the key's hash (one shard while
//! small; one more bit each time the shards pass [`SHARD_LEN`] keys on average). A shard is
//! an open-addressing table: a boxed slice of `(key, Loc)` slots and one control byte per
//! slot (free, deleted, or 7 bits of the key's hash), probed [`GROUP`] control bytes at a
//! time from the key's home slot, as in hashbrown — so a lookup reads one group of control
//! bytes (small, usually cached) and, almost always, the one slot holding the key. Unlike
//! hashbrown, the home slot is the high part of `hash × capacity`, so a capacity needs not
//! be a power of two: each shard is resized on its own to a chosen load
//! ([`SlotKey::TARGET_LOAD`]) when it passes [`SlotKey::MAX_LOAD`] or falls below
//! [`SlotKey::MIN_LOAD`]. Memory per key is therefore `(slot size + 1) / load`, and a
//! resize holds one shard twice, never the whole table.
//!
//! Keys are compared in full: the hash only places them.

use super::Loc;

/// Keys per shard, on average, before the table splits every shard in two.
pub(super) const SHARD_LEN: usize = 1 << 16;

/// At most 2^MAX_BITS shards (beyond, shards just grow).
const MAX_BITS: u32 = 20;

/// Control bytes read at once (one `u64`).
const GROUP: usize = 8;

/// The smallest non-empty shard: a group, so that the copied control bytes after the end
/// map back to the first slots.
const MIN_CAPACITY: usize = GROUP;

/// Shards below this many slots at least double when they grow (fewer small resizes).
const SMALL: usize = 1024;

/// The control byte of a never-used slot.
const EMPTY: u8 = 0xFF;
/// The control byte of a slot whose key was removed while a probe may pass over it.
const DELETED: u8 = 0x80;

/// A key kind stored in a [`Table`].
pub(super) trait SlotKey: Copy + Eq {
    /// A shard grows when an insert would take it past this load (keys and deleted slots
    /// / slots).
    const MAX_LOAD: f64;
    /// The load a shard is resized (or built) to.
    const TARGET_LOAD: f64;
    /// A shard shrinks when a removal takes it below this load.
    const MIN_LOAD: f64;
    /// The key of an unused slot (any value: the control byte tells).
    const ZERO: Self;
    /// A well-mixed 64-bit hash: the top bits choose the shard, the next ones the home
    /// slot, the low 7 bits are the control byte.
    fn hash(self, seed: u64) -> u64;
}

/// The folded 64×64→128-bit multiply: a fast mixer whose every output bit depends on
/// every input bit.
#[inline]
fn fold(a: u64, b: u64) -> u64 {
    let p = u128::from(a) * u128::from(b);
    (p as u64) ^ ((p >> 64) as u64)
}

const MIX: u64 = 0x9E37_79B9_7F4A_7C15;

/// Integer keys: 16-byte slots and a control byte, 19.4–22.7 bytes per key as shards grow.
impl SlotKey for u64 {
    const MAX_LOAD: f64 = 0.875;
    const TARGET_LOAD: f64 = 0.75;
    const MIN_LOAD: f64 = 0.55;
    const ZERO: Self = 0;
    #[inline]
    fn hash(self, seed: u64) -> u64 {
        fold(self ^ seed, MIX)
    }
}

/// 128-bit keys as two words (8-byte alignment): 24-byte slots and a control byte,
/// 26.9–30.5 bytes per key as shards grow.
impl SlotKey for [u64; 2] {
    const MAX_LOAD: f64 = 0.93;
    const TARGET_LOAD: f64 = 0.82;
    const MIN_LOAD: f64 = 0.65;
    const ZERO: Self = [0, 0];
    #[inline]
    fn hash(self, seed: u64) -> u64 {
        fold(self[0] ^ seed, self[1] ^ MIX)
    }
}

#[derive(Clone, Copy)]
struct Slot<K> {
    key: K,
    loc: Loc,
}

/// Where a key goes: its shard, the hash bits left for its home slot, its control byte.
#[derive(Clone, Copy)]
struct Place {
    shard: usize,
    rest: u64,
    tag: u8,
}

/// How a table places keys: the seed of the hash and the shard bits taken.
#[derive(Clone, Copy)]
struct Placer {
    seed: u64,
    bits: u32,
}

impl Placer {
    #[inline]
    fn place<K: SlotKey>(self, key: K) -> Place {
        let hash = key.hash(self.seed);
        Place {
            shard: ((u128::from(hash) << self.bits) >> 64) as usize,
            rest: hash << self.bits,
            tag: (hash & 0x7F) as u8,
        }
    }
}

/// The home slot of a key whose remaining hash is `rest`: `rest / 2^64` of the way along.
#[inline]
fn home(rest: u64, cap: usize) -> usize {
    ((u128::from(rest) * cap as u128) >> 64) as usize
}

#[inline]
fn repeat(byte: u8) -> u64 {
    u64::from_ne_bytes([byte; GROUP])
}

/// [`GROUP`] control bytes, the first in the low byte. The `match_*` masks have bit 7 of
/// each chosen byte set.
#[derive(Clone, Copy)]
struct Group(u64);

impl Group {
    #[inline]
    fn load(ctrl: &[u8], pos: usize) -> Self {
        let bytes: [u8; GROUP] = ctrl[pos..pos + GROUP].try_into().expect("a whole group");
        Group(u64::from_le_bytes(bytes))
    }

    /// Bytes equal to `tag` (a full slot's byte), and possibly a few other full ones
    /// (the callers compare keys).
    #[inline]
    fn match_tag(self, tag: u8) -> u64 {
        let x = self.0 ^ repeat(tag);
        x.wrapping_sub(repeat(0x01)) & !x & repeat(0x80)
    }

    #[inline]
    fn match_empty(self) -> u64 {
        self.0 & (self.0 << 1) & repeat(0x80)
    }

    #[inline]
    fn match_empty_or_deleted(self) -> u64 {
        self.0 & repeat(0x80)
    }
}

/// The slot of the lowest chosen byte of a group read at `pos`.
#[inline]
fn slot_of(pos: usize, mask: u64, cap: usize) -> usize {
    let i = pos + (mask.trailing_zeros() / 8) as usize;
    if i >= cap { i - cap } else { i }
}

pub(super) struct Shard<K> {
    /// A control byte per slot, then a copy of the first [`GROUP`] ones so that a group
    /// can be read from any slot.
    ctrl: Box<[u8]>,
    slots: Box<[Slot<K>]>,
    len: usize,
    /// Slots marked [`DELETED`].
    deleted: usize,
    /// Grow (or clear deleted slots) before an insert when `len + deleted` has reached
    /// this.
    max_len: usize,
    /// Shrink after a removal when `len` is below this.
    min_len: usize,
}

impl<K: SlotKey> Shard<K> {
    fn with_capacity(cap: usize) -> Self {
        debug_assert!(cap == 0 || cap >= MIN_CAPACITY);
        let max_len = ((cap as f64 * K::MAX_LOAD) as usize).min(cap.saturating_sub(1));
        Self {
            ctrl: vec![EMPTY; if cap == 0 { 0 } else { cap + GROUP }].into_boxed_slice(),
            slots: vec![
                Slot {
                    key: K::ZERO,
                    loc: Loc { file: 0, pos: 0 },
                };
                cap
            ]
            .into_boxed_slice(),
            len: 0,
            deleted: 0,
            max_len,
            min_len: (cap as f64 * K::MIN_LOAD) as usize,
        }
    }

    /// The capacity that holds `len` keys at the target load.
    fn capacity_for(len: usize) -> usize {
        if len == 0 {
            return 0;
        }
        ((len as f64 / K::TARGET_LOAD).ceil() as usize)
            .max(len + 1)
            .max(MIN_CAPACITY)
    }

    fn capacity(&self) -> usize {
        self.slots.len()
    }

    fn occupied(&self) -> impl Iterator<Item = &Slot<K>> {
        self.slots
            .iter()
            .zip(self.ctrl.iter())
            .filter(|(_, c)| **c & 0x80 == 0)
            .map(|(s, _)| s)
    }

    #[inline]
    fn set_ctrl(&mut self, i: usize, byte: u8) {
        self.ctrl[i] = byte;
        if i < GROUP {
            let cap = self.capacity();
            self.ctrl[cap + i] = byte;
        }
    }

    /// The slot holding `key`.
    #[inline]
    fn find(&self, key: K, place: Place) -> Option<usize> {
        if self.len == 0 {
            return None;
        }
        let cap = self.capacity();
        let mut pos = home(place.rest, cap);
        loop {
            let group = Group::load(&self.ctrl, pos);
            let mut m = group.match_tag(place.tag);
            while m != 0 {
                let i = slot_of(pos, m, cap);
                if self.slots[i].key == key {
                    return Some(i);
                }
                m &= m - 1;
            }
            // An insert takes the first free slot of the probe: past a group with a
            // never-used slot, `key` cannot be.
            if group.match_empty() != 0 {
                return None;
            }
            pos += GROUP;
            if pos >= cap {
                pos -= cap;
            }
        }
    }

    /// Stores `key`, known absent, at `loc`. Needs `len + deleted < max_len` or less.
    #[inline]
    fn insert_absent(&mut self, key: K, loc: Loc, place: Place) {
        let cap = self.capacity();
        let mut pos = home(place.rest, cap);
        loop {
            let m = Group::load(&self.ctrl, pos).match_empty_or_deleted();
            if m != 0 {
                let i = slot_of(pos, m, cap);
                if self.ctrl[i] == DELETED {
                    self.deleted -= 1;
                }
                self.set_ctrl(i, place.tag);
                self.slots[i] = Slot { key, loc };
                self.len += 1;
                return;
            }
            pos += GROUP;
            if pos >= cap {
                pos -= cap;
            }
        }
    }

    /// Stores `loc` for `key`; returns the key's previous location.
    #[inline]
    fn upsert(&mut self, key: K, loc: Loc, place: Place, placer: Placer) -> Option<Loc> {
        if let Some(i) = self.find(key, place) {
            return Some(std::mem::replace(&mut self.slots[i].loc, loc));
        }
        self.make_room(placer);
        self.insert_absent(key, loc, place);
        None
    }

    fn remove(&mut self, key: K, place: Place) -> Option<Loc> {
        let i = self.find(key, place)?;
        let cap = self.capacity();
        // A probe may have passed over slot `i` only if it lies in a run of a whole group
        // of slots never free; then it stays marked, otherwise it is free again.
        let before = Group::load(&self.ctrl, (i + cap - GROUP) % cap).match_empty();
        let after = Group::load(&self.ctrl, i).match_empty();
        if (before.leading_zeros() / 8 + after.trailing_zeros() / 8) as usize >= GROUP {
            self.set_ctrl(i, DELETED);
            self.deleted += 1;
        } else {
            self.set_ctrl(i, EMPTY);
        }
        self.len -= 1;
        Some(self.slots[i].loc)
    }

    /// Moves every key into new slices of `cap` slots (the old ones are freed after).
    fn resize(&mut self, cap: usize, placer: Placer) {
        let old = std::mem::replace(self, Shard::with_capacity(cap));
        for s in old.occupied() {
            self.insert_absent(s.key, s.loc, placer.place(s.key));
        }
    }

    /// Grows (or clears deleted slots) before an insert if full.
    #[inline]
    fn make_room(&mut self, placer: Placer) {
        if self.len + self.deleted >= self.max_len {
            let cap = self.capacity();
            let grown = if cap < SMALL { cap * 2 } else { 0 };
            self.resize(Self::capacity_for(self.len + 1).max(grown), placer);
        }
    }

    /// Shrinks after a removal if sparse.
    #[inline]
    fn trim(&mut self, placer: Placer) {
        if self.len < self.min_len {
            let cap = Self::capacity_for(self.len);
            if cap < self.capacity() {
                self.resize(cap, placer);
            }
        }
    }

    fn memory_bytes(&self) -> usize {
        self.ctrl.len() + self.slots.len() * std::mem::size_of::<Slot<K>>()
    }
}

/// Key → location for keys of one kind.
pub(super) struct Table<K> {
    placer: Placer,
    shards: Vec<Shard<K>>,
    len: usize,
}

impl<K: SlotKey> Table<K> {
    pub fn new(seed: u64) -> Self {
        Self {
            placer: Placer { seed, bits: 0 },
            shards: Vec::new(),
            len: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    #[inline]
    pub fn get(&self, key: K) -> Option<Loc> {
        if self.len == 0 {
            return None;
        }
        let place = self.placer.place(key);
        let shard = &self.shards[place.shard];
        shard.find(key, place).map(|i| shard.slots[i].loc)
    }

    /// Stores `loc` for `key`; returns the key's previous location.
    pub fn insert(&mut self, key: K, loc: Loc) -> Option<Loc> {
        if self.len >= SHARD_LEN << self.placer.bits && self.placer.bits < MAX_BITS {
            self.reshard(self.placer.bits + 1, 0);
        }
        if self.shards.is_empty() {
            self.reshard(self.placer.bits, 0);
        }
        let placer = self.placer;
        let place = placer.place(key);
        let old = self.shards[place.shard].upsert(key, loc, place, placer);
        if old.is_none() {
            self.len += 1;
        }
        old
    }

    pub fn remove(&mut self, key: K) -> Option<Loc> {
        if self.len == 0 {
            return None;
        }
        let placer = self.placer;
        let place = placer.place(key);
        let shard = &mut self.shards[place.shard];
        let loc = shard.remove(key, place)?;
        shard.trim(placer);
        self.len -= 1;
        Some(loc)
    }

    /// Makes room for `additional` more keys at the target load, so that adding them
    /// resizes nothing.
    pub fn reserve(&mut self, additional: usize) {
        let want = self.len + additional;
        let mut bits = self.placer.bits;
        while bits < MAX_BITS && want > SHARD_LEN << bits {
            bits += 1;
        }
        let per = want.div_ceil(1 << bits);
        if bits != self.placer.bits || self.shards.is_empty() {
            self.reshard(bits, per);
            return;
        }
        let placer = self.placer;
        for shard in &mut self.shards {
            if per + shard.deleted > shard.max_len {
                shard.resize(Shard::<K>::capacity_for(per), placer);
            }
        }
    }

    /// Splits every shard into 2^(bits − current bits), each sized for at least `per`
    /// keys. One old shard at a time: each is freed once its keys have moved.
    fn reshard(&mut self, bits: u32, per: usize) {
        debug_assert!(bits >= self.placer.bits);
        let old = std::mem::take(&mut self.shards);
        let placer = Placer {
            seed: self.placer.seed,
            bits,
        };
        self.placer = placer;
        let n = 1usize << bits;
        let mut shards: Vec<Shard<K>> = Vec::with_capacity(n);
        if old.is_empty() {
            let cap = Shard::<K>::capacity_for(per);
            shards.extend((0..n).map(|_| Shard::with_capacity(cap)));
        } else {
            let children = n / old.len();
            for shard in old {
                let first = shards.len();
                let mut counts = vec![0usize; children];
                for s in shard.occupied() {
                    counts[placer.place(s.key).shard - first] += 1;
                }
                shards.extend(
                    counts
                        .iter()
                        .map(|&c| Shard::with_capacity(Shard::<K>::capacity_for(c.max(per)))),
                );
                for s in shard.occupied() {
                    let place = placer.place(s.key);
                    shards[place.shard].insert_absent(s.key, s.loc, place);
                }
            }
        }
        self.shards = shards;
    }

    /// Heap bytes held: every slot and control byte of every shard, and the shard list.
    pub fn memory_bytes(&self) -> usize {
        self.shards.iter().map(Shard::memory_bytes).sum::<usize>()
            + self.shards.capacity() * std::mem::size_of::<Shard<K>>()
    }

    /// Slots allocated, free ones included.
    #[cfg(test)]
    pub fn slot_count(&self) -> usize {
        self.shards.iter().map(Shard::capacity).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A key whose hash is chosen by the test: many keys share a home.
    #[derive(Clone, Copy, PartialEq, Eq, Debug)]
    struct Crowded(u64, u64);

    impl SlotKey for Crowded {
        const MAX_LOAD: f64 = 0.9;
        const TARGET_LOAD: f64 = 0.75;
        const MIN_LOAD: f64 = 0.5;
        const ZERO: Self = Crowded(0, 0);
        fn hash(self, _seed: u64) -> u64 {
            self.1
        }
    }

    fn loc(i: u64) -> Loc {
        Loc {
            file: (i % 7) as u32,
            pos: i as u32,
        }
    }

    /// Keys sharing one home (at the end of the shard, so probes go round), then a few
    /// other homes: every key is found, replaced and removed exactly.
    #[test]
    fn keys_sharing_a_home_are_kept_apart() {
        for hash in [0, u64::MAX, 1 << 63] {
            let mut table = Table::<Crowded>::new(0);
            let keys: Vec<Crowded> = (0..500u64)
                .map(|i| Crowded(i, if i % 5 == 0 { i << 50 } else { hash }))
                .collect();
            for (i, &k) in keys.iter().enumerate() {
                assert_eq!(table.insert(k, loc(i as u64)), None);
            }
            assert_eq!(table.len(), 500);
            for (i, &k) in keys.iter().enumerate() {
                assert_eq!(table.get(k), Some(loc(i as u64)));
            }
            assert_eq!(table.get(Crowded(1000, hash)), None);
            assert_eq!(table.insert(keys[3], loc(9999)), Some(loc(3)));
            assert_eq!(table.get(keys[3]), Some(loc(9999)));
            // Remove in a scattered order; the rest stay found.
            for step in 0..500u64 {
                let i = (step * 7919 % 500) as usize;
                let expect = if i == 3 { loc(9999) } else { loc(i as u64) };
                assert_eq!(table.remove(keys[i]), Some(expect));
                assert_eq!(table.remove(keys[i]), None);
                if step % 50 == 0 {
                    for step2 in step + 1..500 {
                        let j = (step2 * 7919 % 500) as usize;
                        assert!(table.get(keys[j]).is_some(), "key {j} lost");
                    }
                }
            }
            assert_eq!(table.len(), 0);
            assert_eq!(table.memory_bytes(), std::mem::size_of::<Shard<Crowded>>());
        }
    }

    /// Removals inside full runs leave deleted marks; steady churn must neither lose keys
    /// nor grow the table (the marks are cleared by rehashing in place).
    #[test]
    fn churn_at_a_steady_size_keeps_every_key_and_the_size() {
        let mut table = Table::<u64>::new(7);
        let live = 5_000u64;
        for k in 0..live {
            table.insert(k, loc(k));
        }
        let size = table.memory_bytes();
        for k in live..live * 40 {
            assert_eq!(table.remove(k - live), Some(loc(k - live)));
            assert_eq!(table.insert(k, loc(k)), None);
        }
        assert_eq!(table.len(), live as usize);
        for k in live * 39..live * 40 {
            assert_eq!(table.get(k), Some(loc(k)));
        }
        for k in 0..live * 39 {
            assert_eq!(table.get(k), None);
        }
        assert!(
            table.memory_bytes() <= size * 5 / 4,
            "{} > {size}",
            table.memory_bytes()
        );
    }

    #[test]
    fn shards_split_and_resize_without_losing_keys() {
        let mut table = Table::<u64>::new(42);
        let n = (SHARD_LEN * 3) as u64;
        for k in 0..n {
            table.insert(k * 3, loc(k));
        }
        assert_eq!(table.placer.bits, 2);
        assert_eq!(table.shards.len(), 4);
        for k in 0..n {
            assert_eq!(table.get(k * 3), Some(loc(k)));
            assert_eq!(table.get(k * 3 + 1), None);
        }
        // A reservation splits further at once and sizes every shard.
        table.reserve(SHARD_LEN * 6);
        assert_eq!(table.placer.bits, 4);
        for k in 0..n {
            assert_eq!(table.get(k * 3), Some(loc(k)));
        }
        // Removing most keys shrinks the shards.
        let before = table.memory_bytes();
        for k in 0..n - 1000 {
            assert_eq!(table.remove(k * 3), Some(loc(k)));
        }
        assert!(table.memory_bytes() < before / 20);
        for k in n - 1000..n {
            assert_eq!(table.get(k * 3), Some(loc(k)));
        }
    }
}
