//! The engine's prefix cache: keys and values of token sequences already
//! computed, kept under a memory budget, so that a request whose prompt
//! begins the way an earlier one did feeds only what is new. What shares a
//! head: the chat template and system prompt across one agent's requests,
//! a GRPO group's samples of one prompt, a game's turns (each turn's view
//! repeats the transcript so far), a conversation's next message.
//!
//! An entry is valid only for the weights that computed it: the base model
//! (one per runtime) and the adapter, held by its `Arc` so that its address
//! identifies it for as long as the entry lives (an in-memory adapter that
//! changes between steps, a policy being trained, is a new `Arc` each time).
//! Entries whose adapter nobody else holds any more can never match again
//! and are dropped first.
//!
//! Reuse changes no bit: every position's keys and values depend only on
//! the tokens up to it (attention is computed row by row; the matmul
//! kernels give a row the same bits whatever rows sit beside it), so a
//! sequence's logits, tokens and log-probabilities are the same with and
//! without the cache (tested in `tests/prefix.rs`).

use crate::lora::Adapter;
use crate::model::KvCache;
use std::sync::Arc;

/// Shorter shared heads are not worth an entry or a lookup's copy.
pub const MIN_PREFIX: usize = 8;

/// Counters since start, for the bench and the metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct PrefixStats {
    /// Requests that started from a cached head.
    pub hits: u64,
    /// Requests that found nothing to reuse.
    pub misses: u64,
    /// Prompt tokens not fed thanks to the cache.
    pub reused_tokens: u64,
    /// Prompt tokens fed.
    pub fed_tokens: u64,
    /// Entries dropped to stay within the budget.
    pub evicted: u64,
    pub entries: usize,
    pub bytes: usize,
}

struct Entry {
    adapter: Option<Arc<Adapter>>,
    tokens: Vec<u32>,
    cache: KvCache,
    bytes: usize,
    used: u64,
}

/// Least recently used entries go first once `budget` bytes are held.
pub struct PrefixCache {
    budget: usize,
    entries: Vec<Entry>,
    bytes: usize,
    clock: u64,
    stats: PrefixStats,
}

/// Whether two sequences run under the same weights (one adapter `Arc`).
pub(crate) fn same_adapter(a: Option<&Arc<Adapter>>, b: Option<&Arc<Adapter>>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => Arc::ptr_eq(a, b),
        _ => false,
    }
}

/// How many leading tokens `a` and `b` share.
pub fn shared_len(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

impl PrefixCache {
    /// A cache holding at most `budget` bytes of keys and values (0: off).
    pub fn new(budget: usize) -> PrefixCache {
        PrefixCache { budget, entries: Vec::new(), bytes: 0, clock: 0, stats: PrefixStats::default() }
    }

    pub fn budget(&self) -> usize {
        self.budget
    }

    /// Changes the budget, dropping entries beyond it.
    pub fn set_budget(&mut self, budget: usize) {
        self.budget = budget;
        self.evict(0);
    }

    /// Drops every entry.
    pub fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
    }

    pub fn stats(&self) -> PrefixStats {
        PrefixStats { entries: self.entries.len(), bytes: self.bytes, ..self.stats }
    }

    /// The longest cached head of `tokens` under `adapter`, at most `limit`
    /// positions long: a copy of its keys and values (the caller feeds
    /// `tokens[cache.len()..]`). Counts the request as a hit or a miss.
    pub fn lookup(&mut self, adapter: Option<&Arc<Adapter>>, tokens: &[u32], limit: usize) -> Option<KvCache> {
        let found = self.longest(adapter, tokens, limit);
        let Some((i, len)) = found else {
            self.stats.misses += 1;
            self.stats.fed_tokens += tokens.len() as u64;
            return None;
        };
        self.clock += 1;
        let entry = &mut self.entries[i];
        entry.used = self.clock;
        self.stats.hits += 1;
        self.stats.reused_tokens += len as u64;
        self.stats.fed_tokens += (tokens.len() - len) as u64;
        Some(entry.cache.head(len))
    }

    /// How many leading tokens of `tokens` (at most `limit`) a lookup would
    /// reuse now, without counting or copying anything.
    pub fn reusable(&self, adapter: Option<&Arc<Adapter>>, tokens: &[u32], limit: usize) -> usize {
        self.longest(adapter, tokens, limit).map_or(0, |(_, len)| len)
    }

    fn longest(&self, adapter: Option<&Arc<Adapter>>, tokens: &[u32], limit: usize) -> Option<(usize, usize)> {
        if self.budget == 0 {
            return None;
        }
        self.entries
            .iter()
            .enumerate()
            .filter(|(_, e)| same_adapter(e.adapter.as_ref(), adapter))
            .map(|(i, e)| (i, shared_len(&e.tokens, tokens).min(e.cache.len()).min(limit)))
            .filter(|&(_, len)| len >= MIN_PREFIX)
            .max_by_key(|&(i, len)| (len, self.entries[i].used))
    }

    /// Keeps `cache`, the keys and values of `tokens[..cache.len()]` under
    /// `adapter`. An entry it extends is replaced; if an entry already
    /// covers it, nothing changes.
    pub fn insert(&mut self, adapter: Option<&Arc<Adapter>>, tokens: &[u32], mut cache: KvCache) {
        let len = cache.len();
        if self.budget == 0 || len < MIN_PREFIX || len > tokens.len() {
            return;
        }
        let tokens = &tokens[..len];
        self.clock += 1;
        let mut i = 0;
        while i < self.entries.len() {
            let e = &self.entries[i];
            if same_adapter(e.adapter.as_ref(), adapter) {
                let shared = shared_len(&e.tokens, tokens);
                if shared == len && e.tokens.len() >= len {
                    // Already covered: only fresher now.
                    self.entries[i].used = self.clock;
                    return;
                }
                if shared == e.tokens.len() {
                    // The new entry extends this one.
                    let old = self.entries.swap_remove(i);
                    self.bytes -= old.bytes;
                    continue;
                }
            }
            i += 1;
        }
        cache.shrink();
        let bytes = cache.bytes() + tokens.len() * 4;
        if bytes > self.budget {
            return;
        }
        self.evict(bytes);
        self.bytes += bytes;
        self.entries.push(Entry { adapter: adapter.cloned(), tokens: tokens.to_vec(), cache, bytes, used: self.clock });
    }

    /// Drops entries no request can match any more (their adapter is held
    /// only here), then the least recently used until `room` more bytes fit.
    fn evict(&mut self, room: usize) {
        let before = self.entries.len();
        self.entries.retain(|e| e.adapter.as_ref().is_none_or(|a| Arc::strong_count(a) > 1));
        if self.entries.len() != before {
            self.bytes = self.entries.iter().map(|e| e.bytes).sum();
        }
        while self.bytes + room > self.budget {
            let Some((i, _)) = self.entries.iter().enumerate().min_by_key(|(_, e)| e.used) else { break };
            let old = self.entries.swap_remove(i);
            self.bytes -= old.bytes;
            self.stats.evicted += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf::ModelConfig;

    fn config() -> ModelConfig {
        crate::train::net::tests::tiny("llama")
    }

    #[test]
    fn shared_len_counts_the_common_head() {
        assert_eq!(shared_len(&[1, 2, 3], &[1, 2, 4]), 2);
        assert_eq!(shared_len(&[1, 2], &[1, 2, 3]), 2);
        assert_eq!(shared_len(&[], &[1]), 0);
    }

    #[test]
    fn an_empty_cache_misses_and_a_budget_of_zero_keeps_nothing() {
        let mut off = PrefixCache::new(0);
        let c = config();
        let cache = filled(&c, 20);
        off.insert(None, &(0..20).collect::<Vec<_>>(), cache);
        assert_eq!(off.stats().entries, 0);
        assert!(off.lookup(None, &(0..20).collect::<Vec<_>>(), 19).is_none());
        assert_eq!(off.stats().misses, 1);
    }

    fn filled(c: &ModelConfig, len: usize) -> KvCache {
        let mut cache = KvCache::new(c);
        cache.push_for_tests(len, c.n_kv_heads * c.head_dim);
        cache
    }

    #[test]
    fn lookups_take_the_longest_head_within_the_limit_and_under_the_same_adapter() {
        let c = config();
        let mut p = PrefixCache::new(64 << 20);
        let a: Vec<u32> = (0..40).collect();
        p.insert(None, &a, filled(&c, 40));
        let mut b = a[..30].to_vec();
        b.extend(100..110);
        // 30 shared, the limit says 25.
        assert_eq!(p.lookup(None, &b, 25).map(|k| k.len()), Some(25));
        assert_eq!(p.lookup(None, &b, 100).map(|k| k.len()), Some(30));
        // Too short a head is no hit.
        assert!(p.lookup(None, &[0, 1, 2, 9], 3).is_none());
        // A longer entry that extends the first replaces it.
        p.insert(None, &(0..60).collect::<Vec<_>>(), filled(&c, 60));
        assert_eq!(p.stats().entries, 1);
        // One it covers changes nothing.
        p.insert(None, &a, filled(&c, 40));
        assert_eq!(p.stats().entries, 1);
        let s = p.stats();
        assert_eq!((s.hits, s.misses, s.reused_tokens), (2, 1, 55));
    }

    #[test]
    fn an_adapter_sees_only_its_own_entries_and_they_go_when_it_does() {
        let c = config();
        let mut p = PrefixCache::new(64 << 20);
        let adapter = Arc::new(Adapter::random(&c, &[crate::gguf::Target::Q], 2, 1, 0.1, 0.1));
        let other = Arc::new(Adapter::random(&c, &[crate::gguf::Target::Q], 2, 1, 0.1, 0.1));
        let t: Vec<u32> = (0..30).collect();
        p.insert(Some(&adapter), &t, filled(&c, 30));
        assert!(p.lookup(None, &t, 29).is_none());
        assert!(p.lookup(Some(&other), &t, 29).is_none());
        assert_eq!(p.lookup(Some(&adapter), &t, 29).map(|k| k.len()), Some(29));
        drop(adapter);
        // The next insertion sweeps the orphan.
        p.insert(None, &t, filled(&c, 30));
        assert_eq!(p.stats().entries, 1);
    }

    #[test]
    fn the_budget_evicts_the_least_recently_used() {
        let c = config();
        let one = filled(&c, 20).bytes() + 20 * 4;
        let mut p = PrefixCache::new(one * 2 + one / 2);
        let seqs: Vec<Vec<u32>> = (0..3u32).map(|s| (0..20).map(|t| s * 1000 + t).collect()).collect();
        p.insert(None, &seqs[0], filled(&c, 20));
        p.insert(None, &seqs[1], filled(&c, 20));
        // Touch the first, so the second is the oldest.
        assert!(p.lookup(None, &seqs[0], 19).is_some());
        p.insert(None, &seqs[2], filled(&c, 20));
        let s = p.stats();
        assert_eq!((s.entries, s.evicted), (2, 1));
        assert!(s.bytes <= p.budget());
        assert!(p.lookup(None, &seqs[1], 19).is_none());
        assert!(p.lookup(None, &seqs[0], 19).is_some());
        assert!(p.lookup(None, &seqs[2], 19).is_some());
    }
}
