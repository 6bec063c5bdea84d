//! The multi-tier cache index (spec §5): which entry lives in which tier,
//! each tier's usage, LRU order, and the waterfall `ensure_space` of §5.3
//! with its constants.
//!
//! This module only decides; it moves no bytes. An allocation returns a
//! plan (demotions and deletions, in the order the reference performs
//! them) that the request pipeline then carries out as I/O. The index is
//! updated at decision time, in one thread, so no two allocations can pick
//! the same victim or reserve space twice for it: a tier's usage is always
//! exactly the sum of the sizes of the entries it holds (including entries
//! being written or moved in), which [`Cache::check_accounting`] verifies.
//! That is the reservation leak of the reference (§5.3, §16 item 5) fixed.
//!
//! Entries with I/O in progress (being written, read or moved) are skipped
//! as eviction victims; the reference would block on the entry's lock.
//! Nothing is ever promoted: a read only refreshes the LRU position.

use std::collections::{BTreeSet, HashMap};

use super::config::Eviction;

/// Tiers in waterfall order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Tier {
    Gpu = 0,
    Cpu = 1,
    Storage = 2,
}

impl Tier {
    pub const ALL: [Tier; 3] = [Tier::Gpu, Tier::Cpu, Tier::Storage];

    /// The reference's name in `tier_{name}_…` fields.
    pub fn name(self) -> &'static str {
        match self {
            Tier::Gpu => "gpu",
            Tier::Cpu => "cpu",
            Tier::Storage => "storage",
        }
    }

    fn idx(self) -> usize {
        self as usize
    }
}

/// Index of an entry (never reused within a run).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EntryId(pub u32);

/// What is happening to an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryState {
    /// Its first write is in progress: readers see a miss.
    Writing,
    /// At rest.
    Idle,
    /// A reader holds it.
    Reading,
    /// Being demoted from `from` to its current tier.
    Moving { from: Tier },
}

#[derive(Debug, Clone)]
pub struct Entry {
    pub key: String,
    pub size_bytes: u64,
    pub tokens: u64,
    pub tier: Tier,
    pub state: EntryState,
    /// Logical access tick (monotonic), the LRU order.
    pub last_access: u64,
    pub access_count: u64,
    /// Which write of this key this is (unique per run).
    pub generation: u64,
}

/// One step of an allocation's plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Move {
    /// Move the entry from `from` to `to` (read it there, write it here).
    Demote { id: EntryId, key: String, size_bytes: u64, from: Tier, to: Tier },
    /// Remove the entry from the terminal tier (already gone from the index).
    Delete { id: EntryId, key: String, size_bytes: u64, tier: Tier, generation: u64 },
}

/// Outcome of [`Cache::allocate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Alloc {
    /// The key is already cached (or being written): nothing to do.
    Exists(EntryId),
    /// A new entry in `tier`, state `Writing`, after the `plan` moves.
    Placed { id: EntryId, tier: Tier, plan: Vec<Move>, forced: bool },
}

#[derive(Debug, Clone)]
struct TierState {
    present: bool,
    /// None: unbounded.
    capacity: Option<u64>,
    usage: u64,
    lru: BTreeSet<(u64, EntryId)>,
}

/// The cache index.
pub struct Cache {
    tiers: [TierState; 3],
    entries: Vec<Option<Entry>>,
    by_key: HashMap<String, EntryId>,
    ev: Eviction,
    tick: u64,
    generation: u64,
    /// Allocations that found no tier and were forced onto the last one.
    pub forced_writes: u64,
}

impl Cache {
    /// Tiers with capacity 0 are absent; `storage` None is unbounded.
    pub fn new(gpu_bytes: u64, cpu_bytes: u64, storage_bytes: Option<u64>, ev: Eviction) -> Cache {
        let tier =
            |present: bool, capacity: Option<u64>| TierState { present, capacity, usage: 0, lru: BTreeSet::new() };
        Cache {
            tiers: [
                tier(gpu_bytes > 0, Some(gpu_bytes)),
                tier(cpu_bytes > 0, Some(cpu_bytes)),
                tier(true, storage_bytes),
            ],
            entries: Vec::new(),
            by_key: HashMap::new(),
            ev,
            tick: 0,
            generation: 0,
            forced_writes: 0,
        }
    }

    pub fn present(&self, t: Tier) -> bool {
        self.tiers[t.idx()].present
    }

    pub fn capacity(&self, t: Tier) -> Option<u64> {
        self.tiers[t.idx()].capacity
    }

    pub fn usage(&self, t: Tier) -> u64 {
        self.tiers[t.idx()].usage
    }

    pub fn entry_count(&self, t: Tier) -> usize {
        self.tiers[t.idx()].lru.len()
    }

    pub fn get(&self, id: EntryId) -> Option<&Entry> {
        self.entries.get(id.0 as usize).and_then(Option::as_ref)
    }

    fn get_mut(&mut self, id: EntryId) -> &mut Entry {
        self.entries[id.0 as usize].as_mut().expect("live entry")
    }

    pub fn lookup(&self, key: &str) -> Option<EntryId> {
        self.by_key.get(key).copied()
    }

    /// Live entries' keys, sorted (for tests and decode-only picks).
    pub fn keys_with_prefix(&self, prefix: &str) -> Vec<String> {
        let mut v: Vec<String> =
            self.entries.iter().flatten().filter(|e| e.key.starts_with(prefix)).map(|e| e.key.clone()).collect();
        v.sort();
        v
    }

    fn next_tier(&self, t: Tier) -> Option<Tier> {
        Tier::ALL.into_iter().skip(t.idx() + 1).find(|n| self.present(*n))
    }

    fn last_tier(&self) -> Tier {
        Tier::Storage
    }

    /// Allocates `key` (spec §5.2): the first tier whose `ensure_space`
    /// succeeds wins; if none does, the entry is forced onto storage.
    pub fn allocate(&mut self, key: &str, tokens: u64, size_bytes: u64) -> Alloc {
        if let Some(id) = self.lookup(key) {
            return Alloc::Exists(id);
        }
        let mut plan = Vec::new();
        let mut placed = None;
        for t in Tier::ALL {
            if self.present(t) && self.ensure_space(t, size_bytes, 0, &mut plan) {
                placed = Some(t);
                break;
            }
        }
        let forced = placed.is_none();
        let tier = placed.unwrap_or_else(|| {
            self.forced_writes += 1;
            let last = self.last_tier();
            self.tiers[last.idx()].usage += size_bytes;
            last
        });
        self.generation += 1;
        self.tick += 1;
        let id = EntryId(self.entries.len() as u32);
        self.entries.push(Some(Entry {
            key: key.to_string(),
            size_bytes,
            tokens,
            tier,
            state: EntryState::Writing,
            last_access: self.tick,
            access_count: 1,
            generation: self.generation,
        }));
        self.by_key.insert(key.to_string(), id);
        self.tiers[tier.idx()].lru.insert((self.tick, id));
        Alloc::Placed { id, tier, plan, forced }
    }

    /// The waterfall of spec §5.3 for `need` bytes in tier `t`; reserves on
    /// success. Demotions recurse into the next tier first.
    fn ensure_space(&mut self, t: Tier, need: u64, depth: u32, plan: &mut Vec<Move>) -> bool {
        let Some(cap) = self.tiers[t.idx()].capacity else {
            self.tiers[t.idx()].usage += need;
            return true;
        };
        if depth > self.ev.max_recursion_depth {
            return false;
        }
        let next = self.next_tier(t);
        let terminal = next.is_none();
        let capf = cap as f64;
        if !terminal && need as f64 > self.ev.large_entry_limit_ratio * capf {
            return false;
        }
        let target = if terminal { capf } else { self.ev.target_usage_ratio * capf };
        let n = self.tiers[t.idx()].lru.len() as u64;
        let budget = u64::from(self.ev.max_evictions_hard_cap).min(u64::from(self.ev.max_evictions_min).max(n + 100));
        let mut evicted = 0u64;
        let mut cursor: Option<(u64, EntryId)> = None;
        let mut first_pass = true;
        loop {
            let usage = self.tiers[t.idx()].usage;
            if (usage + need) as f64 <= target || (usage as f64) < 0.05 * capf {
                self.tiers[t.idx()].usage += need;
                return true;
            }
            if first_pass && !terminal && (usage as f64) < 0.2 * capf && need as f64 > 0.5 * target {
                return false;
            }
            let victim = self.next_victim(t, cursor);
            let Some((tick, id)) = victim else {
                if first_pass {
                    first_pass = false;
                    cursor = None;
                    if self.next_victim(t, None).is_some() {
                        continue;
                    }
                }
                if terminal {
                    self.tiers[t.idx()].usage += need;
                    return true;
                }
                return false;
            };
            cursor = Some((tick, id));
            let size = self.get(id).expect("victim").size_bytes;
            match next {
                None => {
                    let e = self.remove(id);
                    plan.push(Move::Delete {
                        id,
                        key: e.key,
                        size_bytes: e.size_bytes,
                        tier: t,
                        generation: e.generation,
                    });
                }
                Some(to) => {
                    if !self.ensure_space(to, size, depth + 1, plan) {
                        return false;
                    }
                    self.tiers[t.idx()].lru.remove(&(tick, id));
                    self.tiers[t.idx()].usage -= size;
                    self.tiers[to.idx()].lru.insert((tick, id));
                    let e = self.get_mut(id);
                    e.tier = to;
                    e.state = EntryState::Moving { from: t };
                    let key = e.key.clone();
                    plan.push(Move::Demote { id, key, size_bytes: size, from: t, to });
                }
            }
            evicted += 1;
            if evicted >= budget {
                if terminal {
                    self.tiers[t.idx()].usage += need;
                    return true;
                }
                return false;
            }
        }
    }

    /// The least recently used idle entry of `t` after `cursor`.
    fn next_victim(&self, t: Tier, cursor: Option<(u64, EntryId)>) -> Option<(u64, EntryId)> {
        let lru = &self.tiers[t.idx()].lru;
        let mut it: Box<dyn Iterator<Item = &(u64, EntryId)>> = match cursor {
            Some(c) => Box::new(lru.range((std::ops::Bound::Excluded(c), std::ops::Bound::Unbounded))),
            None => Box::new(lru.iter()),
        };
        it.find(|(_, id)| self.get(*id).is_some_and(|e| e.state == EntryState::Idle)).copied()
    }

    /// Removes an entry from the index and its tier; returns it.
    pub fn remove(&mut self, id: EntryId) -> Entry {
        let e = self.entries[id.0 as usize].take().expect("live entry");
        let ts = &mut self.tiers[e.tier.idx()];
        ts.lru.remove(&(e.last_access, id));
        ts.usage -= e.size_bytes;
        self.by_key.remove(&e.key);
        e
    }

    /// A read hit: refreshes the LRU position (no promotion) and locks the
    /// entry for the reader.
    pub fn begin_read(&mut self, id: EntryId) {
        self.tick += 1;
        let tick = self.tick;
        let e = self.get_mut(id);
        debug_assert_eq!(e.state, EntryState::Idle);
        let (old, tier) = (e.last_access, e.tier);
        e.last_access = tick;
        e.access_count += 1;
        e.state = EntryState::Reading;
        let lru = &mut self.tiers[tier.idx()].lru;
        lru.remove(&(old, id));
        lru.insert((tick, id));
    }

    /// Ends a write, read or move. A failed write or move loses the entry
    /// (its space is released); a failed read keeps it.
    pub fn end_io(&mut self, id: EntryId, ok: bool) {
        let state = self.get(id).expect("live entry").state;
        match (state, ok) {
            (EntryState::Reading, _) | (_, true) => self.get_mut(id).state = EntryState::Idle,
            (_, false) => {
                self.remove(id);
            }
        }
    }

    /// Checks that every tier's usage equals the sum of its entries' sizes
    /// and that the LRU sets and the key index agree with the entries.
    pub fn check_accounting(&self) -> Result<(), String> {
        let mut sums = [0u64; 3];
        let mut counts = [0usize; 3];
        for (i, e) in self.entries.iter().enumerate() {
            if let Some(e) = e {
                sums[e.tier.idx()] += e.size_bytes;
                counts[e.tier.idx()] += 1;
                if !self.tiers[e.tier.idx()].lru.contains(&(e.last_access, EntryId(i as u32))) {
                    return Err(format!("entry {} missing from the {} LRU", e.key, e.tier.name()));
                }
                if self.by_key.get(&e.key) != Some(&EntryId(i as u32)) {
                    return Err(format!("entry {} missing from the key index", e.key));
                }
            }
        }
        for t in Tier::ALL {
            let ts = &self.tiers[t.idx()];
            if ts.usage != sums[t.idx()] {
                return Err(format!("{} usage {} != sum of its entries {}", t.name(), ts.usage, sums[t.idx()]));
            }
            if ts.lru.len() != counts[t.idx()] {
                return Err(format!("{} LRU holds {} entries, tier has {}", t.name(), ts.lru.len(), counts[t.idx()]));
            }
        }
        if self.by_key.len() != counts.iter().sum::<usize>() {
            return Err("key index size differs from live entries".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn placed(a: Alloc) -> (EntryId, Tier, Vec<Move>) {
        match a {
            Alloc::Placed { id, tier, plan, .. } => (id, tier, plan),
            Alloc::Exists(_) => panic!("expected a placement"),
        }
    }

    fn settle(c: &mut Cache, id: EntryId, plan: &[Move]) {
        for m in plan {
            if let Move::Demote { id, .. } = m {
                c.end_io(*id, true);
            }
        }
        c.end_io(id, true);
        c.check_accounting().unwrap();
    }

    /// GPU 100 MiB, CPU 100 MiB, storage 100 MiB; entries of 30 MiB.
    /// Non-terminal tiers fill to 80 % (2 entries = 60, a third would be
    /// 90 > 80), the terminal tier to 100 % (3 entries = 90).
    #[test]
    fn waterfall_places_in_the_fastest_tier_and_demotes_lru_first_then_deletes_at_the_last_tier() {
        let mut c = Cache::new(100 * MIB, 100 * MIB, Some(100 * MIB), Eviction::default());
        let mut ids = Vec::new();
        for i in 0..2 {
            let (id, tier, plan) = placed(c.allocate(&format!("k{i}"), 1, 30 * MIB));
            assert_eq!((tier, plan.len()), (Tier::Gpu, 0));
            settle(&mut c, id, &plan);
            ids.push(id);
        }
        // k2: GPU is at 60 of 80 → demote LRU k0 to CPU.
        let (id2, tier, plan) = placed(c.allocate("k2", 1, 30 * MIB));
        assert_eq!(tier, Tier::Gpu);
        assert_eq!(
            plan,
            vec![Move::Demote { id: ids[0], key: "k0".into(), size_bytes: 30 * MIB, from: Tier::Gpu, to: Tier::Cpu }]
        );
        settle(&mut c, id2, &plan);
        // Reading k1 makes k2 the GPU's LRU entry.
        c.begin_read(ids[1]);
        c.end_io(ids[1], true);
        let (id3, _, plan) = placed(c.allocate("k3", 1, 30 * MIB));
        assert_eq!(
            plan,
            vec![Move::Demote { id: id2, key: "k2".into(), size_bytes: 30 * MIB, from: Tier::Gpu, to: Tier::Cpu }]
        );
        settle(&mut c, id3, &plan);
        assert_eq!((c.usage(Tier::Gpu), c.usage(Tier::Cpu)), (60 * MIB, 60 * MIB));
        // k4: GPU full → its LRU (k1? no: k1 was read after k2 was written,
        // k3 is newest) k1 must go to CPU, which is full → CPU's LRU k0 goes
        // to storage first (recursion before the demotion).
        let (id4, _, plan) = placed(c.allocate("k4", 1, 30 * MIB));
        assert_eq!(
            plan,
            vec![
                Move::Demote { id: ids[0], key: "k0".into(), size_bytes: 30 * MIB, from: Tier::Cpu, to: Tier::Storage },
                Move::Demote { id: ids[1], key: "k1".into(), size_bytes: 30 * MIB, from: Tier::Gpu, to: Tier::Cpu },
            ]
        );
        settle(&mut c, id4, &plan);
        // Fill storage to 3 entries, then the 4th deletes storage's LRU.
        for i in 5..20 {
            let (id, _, plan) = placed(c.allocate(&format!("k{i}"), 1, 30 * MIB));
            settle(&mut c, id, &plan);
            assert!(c.usage(Tier::Storage) <= 90 * MIB);
        }
        assert_eq!(c.entry_count(Tier::Storage), 3);
        assert!(c.lookup("k0").is_none(), "k0 was deleted at the last tier");
        c.check_accounting().unwrap();
    }

    #[test]
    fn deletion_at_the_terminal_tier_names_the_victim_and_releases_its_space() {
        let mut c = Cache::new(0, 0, Some(100 * MIB), Eviction::default());
        for i in 0..3 {
            let (id, tier, plan) = placed(c.allocate(&format!("k{i}"), 1, 30 * MIB));
            assert_eq!((tier, plan.len()), (Tier::Storage, 0));
            settle(&mut c, id, &plan);
        }
        let (id, _, plan) = placed(c.allocate("k3", 1, 30 * MIB));
        assert_eq!(
            plan,
            vec![Move::Delete {
                id: EntryId(0),
                key: "k0".into(),
                size_bytes: 30 * MIB,
                tier: Tier::Storage,
                generation: 1
            }]
        );
        settle(&mut c, id, &plan);
        assert_eq!(c.usage(Tier::Storage), 90 * MIB);
    }

    #[test]
    fn reads_never_promote() {
        let mut c = Cache::new(100 * MIB, 100 * MIB, None, Eviction::default());
        for i in 0..6 {
            let (id, _, plan) = placed(c.allocate(&format!("k{i}"), 1, 30 * MIB));
            settle(&mut c, id, &plan);
        }
        let k0 = c.lookup("k0").unwrap();
        assert_eq!(c.get(k0).unwrap().tier, Tier::Storage);
        for _ in 0..10 {
            c.begin_read(k0);
            c.end_io(k0, true);
        }
        assert_eq!(c.get(k0).unwrap().tier, Tier::Storage);
        assert_eq!(c.get(k0).unwrap().access_count, 11);
    }

    #[test]
    fn large_entries_skip_a_tier_and_busy_entries_are_never_victims() {
        let mut c = Cache::new(100 * MIB, 0, Some(200 * MIB), Eviction::default());
        // > 95 % of the GPU tier: goes to storage.
        let (_, tier, _) = placed(c.allocate("big", 1, 96 * MIB));
        assert_eq!(tier, Tier::Storage);
        // 20 %/0.5 bailout: GPU holds 10 MiB (< 20 %), need 50 > 0.5 × 80.
        let (small, _, plan) = placed(c.allocate("small", 1, 10 * MIB));
        settle(&mut c, small, &plan);
        let (_, tier, _) = placed(c.allocate("half", 1, 50 * MIB));
        assert_eq!(tier, Tier::Gpu, "10 + 50 ≤ 80 fits");
        // A new entry that needs space while both GPU entries are busy
        // (half is still being written, small is being read) cannot evict.
        c.begin_read(small);
        let (_, tier, plan) = placed(c.allocate("more", 1, 30 * MIB));
        assert_eq!((tier, plan.len()), (Tier::Storage, 0));
        c.check_accounting().unwrap();
        assert!(matches!(c.allocate("more", 1, 30 * MIB), Alloc::Exists(_)));
    }

    #[test]
    fn a_failed_write_releases_its_reservation() {
        let mut c = Cache::new(0, 100 * MIB, None, Eviction::default());
        let (id, _, _) = placed(c.allocate("x", 1, 30 * MIB));
        assert_eq!(c.usage(Tier::Cpu), 30 * MIB);
        c.end_io(id, false);
        assert_eq!(c.usage(Tier::Cpu), 0);
        assert!(c.lookup("x").is_none());
        c.check_accounting().unwrap();
    }
}
