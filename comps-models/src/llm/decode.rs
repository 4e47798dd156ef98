//! Turning generated tokens into text as they come: bytes of a character split over several
//! tokens are held until the character is whole, and text that may be the start of a stop
//! string is held until it is known not to be, so a stop string never leaks, not even in part.

use tokenizers::Tokenizer;

/// Incremental detokenizer. Decoding a window of recent tokens (rather than each token alone)
/// keeps the spaces and merged bytes that depend on the neighbours right.
pub struct TextStream<'a> {
    tokenizer: &'a Tokenizer,
    ids: Vec<u32>,
    prefix_offset: usize,
    read_offset: usize,
}

impl<'a> TextStream<'a> {
    /// An empty stream.
    pub fn new(tokenizer: &'a Tokenizer) -> Self {
        Self { tokenizer, ids: Vec::new(), prefix_offset: 0, read_offset: 0 }
    }

    fn decode(&self, ids: &[u32]) -> Result<String, String> {
        self.tokenizer.decode(ids, true).map_err(|e| e.to_string())
    }

    /// Add a token; returns the text it completes (maybe empty).
    pub fn push(&mut self, id: u32) -> Result<String, String> {
        self.ids.push(id);
        let before = self.decode(&self.ids[self.prefix_offset..self.read_offset])?;
        let now = self.decode(&self.ids[self.prefix_offset..])?;
        if now.len() > before.len() && !now.ends_with('\u{FFFD}') {
            let Some(new) = now.get(before.len()..) else { return Ok(String::new()) };
            let new = new.to_string();
            self.prefix_offset = self.read_offset;
            self.read_offset = self.ids.len();
            return Ok(new);
        }
        Ok(String::new())
    }

    /// Whatever is still held back (an incomplete character at the very end).
    pub fn finish(&mut self) -> Result<String, String> {
        let before = self.decode(&self.ids[self.prefix_offset..self.read_offset])?;
        let now = self.decode(&self.ids[self.prefix_offset..])?;
        self.prefix_offset = self.ids.len();
        self.read_offset = self.ids.len();
        Ok(now.get(before.len()..).unwrap_or_default().to_string())
    }
}

/// Finds stop strings in streamed text.
pub struct StopMatcher {
    stops: Vec<String>,
    held: String,
}

/// What to do with a piece of text.
#[derive(Debug, PartialEq, Eq)]
pub enum StopOutcome {
    /// Send this (maybe empty) and go on.
    Continue(String),
    /// Send this and stop: a stop string was found right after it.
    Stop(String),
}

impl StopMatcher {
    /// A matcher for `stops` (empty strings are ignored).
    pub fn new(stops: Vec<String>) -> Self {
        Self { stops: stops.into_iter().filter(|s| !s.is_empty()).collect(), held: String::new() }
    }

    /// Feed new text.
    pub fn push(&mut self, text: &str) -> StopOutcome {
        if self.stops.is_empty() {
            return StopOutcome::Continue(text.to_string());
        }
        self.held.push_str(text);
        let first = self.stops.iter().filter_map(|s| self.held.find(s.as_str())).min();
        if let Some(at) = first {
            let out = self.held[..at].to_string();
            self.held.clear();
            return StopOutcome::Stop(out);
        }
        // Hold back the longest tail that begins some stop string.
        let mut keep = 0;
        for s in &self.stops {
            for (i, _) in s.char_indices().skip(1) {
                if i > keep && self.held.ends_with(&s[..i]) {
                    keep = i;
                }
            }
        }
        let cut = self.held.len() - keep;
        let out = self.held[..cut].to_string();
        self.held.drain(..cut);
        StopOutcome::Continue(out)
    }

    /// The end of generation: what was held back is not a stop string after all.
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.held)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_strings_never_leak() {
        let mut m = StopMatcher::new(vec!["###".into(), "END".into()]);
        assert_eq!(m.push("Hello #"), StopOutcome::Continue("Hello ".into()));
        assert_eq!(m.push("# wor"), StopOutcome::Continue("## wor".into()));
        assert_eq!(m.push("ld E"), StopOutcome::Continue("ld ".into()));
        assert_eq!(m.push("NDING"), StopOutcome::Stop("".into()));
        let mut m = StopMatcher::new(vec!["stop".into()]);
        assert_eq!(m.push("a st"), StopOutcome::Continue("a ".into()));
        assert_eq!(m.finish(), "st");
        let mut m = StopMatcher::new(vec![]);
        assert_eq!(m.push("x"), StopOutcome::Continue("x".into()));
    }
}
