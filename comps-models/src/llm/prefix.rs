//! Prompt prefix caching, as vLLM's automatic prefix caching and llama-server's prompt cache
//! do it: the keys and values of finished prompts are kept (up to a byte budget, least
//! recently used out first), and a new prompt that begins with the same tokens starts from a
//! copy of them instead of running those tokens again. Chat prompts share their template and
//! system prompt, and RAG prompts their instructions, so a first token comes sooner and a
//! batch of new requests spends fewer steps on prompts.
//!
//! The keys and values of a position depend only on the tokens up to it, so a sequence started
//! from a copy computes what it would have computed alone.

use super::model::PrefixState;

struct Entry {
    ids: Vec<u32>,
    state: PrefixState,
    used: u64,
}

/// Kept prompt states, looked up by their longest common prefix with a new prompt.
pub struct PrefixCache {
    entries: Vec<Entry>,
    bytes: usize,
    limit: usize,
    clock: u64,
}

impl PrefixCache {
    /// A cache keeping at most `limit` bytes of keys and values (0: nothing is kept).
    pub fn new(limit: usize) -> Self {
        Self { entries: Vec::new(), bytes: 0, limit, clock: 0 }
    }

    /// Bytes of keys and values kept.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Positions kept, over all entries.
    pub fn tokens(&self) -> usize {
        self.entries.iter().map(|e| e.state.len()).sum()
    }

    /// The kept state sharing the longest prefix with `prompt`, and the length to take from
    /// it: at most all but the last token of `prompt`, whose logits the new sequence needs.
    pub fn lookup(&mut self, prompt: &[u32]) -> Option<(usize, &PrefixState)> {
        let most = prompt.len().saturating_sub(1);
        let (at, len) = self
            .entries
            .iter()
            .enumerate()
            .map(|(i, e)| (i, common(&e.ids, prompt).min(e.state.len()).min(most)))
            .max_by_key(|&(i, len)| (len, self.entries[i].used))?;
        if len == 0 {
            return None;
        }
        self.clock += 1;
        let entry = &mut self.entries[at];
        entry.used = self.clock;
        Some((len, &entry.state))
    }

    /// Whether a kept entry already begins with all of `ids` (then keeping them adds nothing).
    pub fn covers(&self, ids: &[u32]) -> bool {
        self.entries.iter().any(|e| e.state.len() >= ids.len() && e.ids.starts_with(ids))
    }

    /// Whether keeping the state of `ids` would add anything (so that a caller copies it only
    /// then): the cache has a budget and does not cover them yet.
    pub fn wants(&self, ids: &[u32]) -> bool {
        self.limit > 0 && !self.covers(ids)
    }

    /// Keep `state`, the keys and values of `ids`. Entries it extends are dropped, then the
    /// least recently used ones until the budget holds; a state larger than the whole budget
    /// is not kept.
    pub fn insert(&mut self, ids: Vec<u32>, state: PrefixState) {
        let size = state.bytes();
        if size > self.limit || state.len() < ids.len() || self.covers(&ids) {
            return;
        }
        self.entries.retain(|e| {
            let extended = ids.starts_with(&e.ids);
            if extended {
                self.bytes -= e.state.bytes();
            }
            !extended
        });
        while self.bytes + size > self.limit {
            let Some(oldest) = self.entries.iter().enumerate().min_by_key(|(_, e)| e.used).map(|(i, _)| i) else {
                break;
            };
            let gone = self.entries.swap_remove(oldest);
            self.bytes -= gone.state.bytes();
        }
        self.clock += 1;
        self.bytes += size;
        self.entries.push(Entry { ids, state, used: self.clock });
    }
}

/// Length of the common prefix of `a` and `b`.
fn common(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::native::Cache;

    fn state(len: usize) -> PrefixState {
        PrefixState(Cache::filled(2, len))
    }

    #[test]
    fn finds_the_longest_shared_prefix_and_leaves_the_last_token_to_run() {
        let mut pc = PrefixCache::new(1 << 20);
        assert!(pc.lookup(&[1, 2, 3]).is_none(), "empty");
        pc.insert(vec![1, 2, 3, 4, 5], state(5));
        pc.insert(vec![1, 2, 9, 9], state(4));
        assert_eq!(pc.lookup(&[1, 2, 3, 4, 7, 8]).map(|(n, _)| n), Some(4));
        assert_eq!(pc.lookup(&[1, 2, 9, 9, 9]).map(|(n, _)| n), Some(4));
        // The same prompt again: all but its last token.
        assert_eq!(pc.lookup(&[1, 2, 3, 4, 5]).map(|(n, _)| n), Some(4));
        assert_eq!(pc.lookup(&[1]).map(|(n, _)| n), None, "one token: nothing to take");
        assert!(pc.lookup(&[7, 1, 2]).is_none(), "no shared first token");
        assert_eq!(pc.tokens(), 9);
    }

    #[test]
    fn keeps_to_its_budget_dropping_the_least_recently_used() {
        let one = state(10).bytes();
        let mut pc = PrefixCache::new(2 * one);
        pc.insert((0..10).collect(), state(10));
        pc.insert((100..110).collect(), state(10));
        assert_eq!(pc.bytes(), 2 * one);
        // Using the first makes the second the oldest.
        assert!(pc.lookup(&(0..20).collect::<Vec<_>>()).is_some());
        pc.insert((200..210).collect(), state(10));
        assert_eq!(pc.bytes(), 2 * one);
        assert!(pc.lookup(&(0..20).collect::<Vec<_>>()).is_some());
        assert!(pc.lookup(&(100..120).collect::<Vec<_>>()).is_none(), "the oldest went");
        assert!(pc.lookup(&(200..220).collect::<Vec<_>>()).is_some());
        // Too large for the whole budget: not kept. Nothing kept with a zero budget.
        pc.insert((300..330).collect(), state(30));
        assert!(pc.lookup(&(300..340).collect::<Vec<_>>()).is_none());
        let mut none = PrefixCache::new(0);
        none.insert(vec![1, 2, 3], state(3));
        assert_eq!((none.bytes(), none.tokens()), (0, 0));
    }

    #[test]
    fn a_longer_prompt_replaces_the_entries_it_extends() {
        let mut pc = PrefixCache::new(1 << 20);
        pc.insert(vec![1, 2, 3], state(3));
        pc.insert(vec![1, 2, 3, 4, 5, 6], state(6));
        assert_eq!(pc.tokens(), 6, "[1, 2, 3] is inside the longer entry");
        assert_eq!(pc.bytes(), state(6).bytes());
        assert!(pc.covers(&[1, 2, 3, 4]));
        pc.insert(vec![1, 2, 3, 4], state(4));
        assert_eq!(pc.tokens(), 6, "a covered prompt adds nothing");
        assert!(!pc.covers(&[1, 2, 3, 4, 5, 6, 7]));
    }
}
