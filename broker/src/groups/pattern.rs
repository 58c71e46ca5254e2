//! Pattern subscriptions: a member that subscribes to a regular expression
//! (Kafka's `SubscribedTopicRegex`, KIP-848) gets every topic whose whole
//! name matches it, now and as topics come and go.
//!
//! Kafka compiles these with RE2J; Rust's `regex` is the same family (RE2:
//! no backtracking, so no pattern costs more than linear time in the name)
//! and refuses the same constructs (lookaround, backreferences). A pattern
//! must match the whole name, as Java's `Matcher.matches()` does, so
//! librdkafka's `^orders-.*` and Java's `orders-.*` mean the same.
//!
//! The coordinator resolves patterns against the topic names it knows
//! ([`super::GroupCoordinator`] lists them) and keeps the result in memory
//! only; what a group's target was computed from is persisted with it, so
//! a coordinator that loads the group changes nothing until it has listed
//! the topics again.

use std::collections::BTreeSet;

use regex::{Regex, RegexBuilder};

use super::OFFSETS_TOPIC;
use super::state::{GroupError, MAX_SUBSCRIBED_TOPICS};

/// Longest pattern accepted, in bytes.
pub const MAX_PATTERN_LEN: usize = 4096;

/// Most memory one compiled pattern may take (and its lazy DFA's cache).
const MAX_COMPILED_BYTES: usize = 256 << 10;

/// A compiled subscription pattern and the topics it matched last.
#[derive(Debug, Clone)]
pub struct Pattern {
    re: Regex,
    /// `None` until resolved against a topic listing.
    matched: Option<BTreeSet<String>>,
    /// The generation of the listing it was resolved against.
    resolved_from: Option<u64>,
}

impl Pattern {
    /// Compiles `pattern` (as the client sent it).
    pub fn compile(pattern: &str) -> Result<Self, GroupError> {
        let invalid = |detail: String| GroupError::InvalidPattern {
            pattern: pattern.chars().take(64).collect(),
            detail,
        };
        if pattern.len() > MAX_PATTERN_LEN {
            return Err(invalid(format!(
                "it is longer than {MAX_PATTERN_LEN} bytes"
            )));
        }
        let build = |p: &str| {
            RegexBuilder::new(p)
                .size_limit(MAX_COMPILED_BYTES)
                .dfa_size_limit(MAX_COMPILED_BYTES)
                .build()
        };
        // The pattern on its own first: its errors point into what the
        // client sent, and `a)|(b` cannot escape the anchoring below.
        let syntax = |e: regex::Error| {
            invalid(format!(
                "it is not a valid regular expression: {e}; use RE2 syntax (no lookaround or \
                 backreferences) matching whole topic names, e.g. `orders-.*`"
            ))
        };
        build(pattern).map_err(syntax)?;
        let re = build(&format!("^(?:{pattern})$")).map_err(syntax)?;
        Ok(Self {
            re,
            matched: None,
            resolved_from: None,
        })
    }

    /// True when the whole of `topic` matches.
    pub fn matches(&self, topic: &str) -> bool {
        topic != OFFSETS_TOPIC && self.re.is_match(topic)
    }

    /// Resolves the pattern against listing `generation`, every live
    /// topic's name in order (again only if the listing changed); at most
    /// [`MAX_SUBSCRIBED_TOPICS`] topics, the first by name. (Whether a
    /// member's topics changed is the coordinator's to tell: it filters
    /// the matches per member.)
    pub fn resolve(&mut self, generation: u64, names: &[String]) {
        if self.resolved_from == Some(generation) {
            return;
        }
        self.resolved_from = Some(generation);
        let mut matching = names.iter().filter(|n| self.matches(n));
        let matched: BTreeSet<String> = matching
            .by_ref()
            .take(MAX_SUBSCRIBED_TOPICS)
            .cloned()
            .collect();
        if matching.next().is_some() {
            tracing::warn!(pattern = %self.re.as_str(), max = MAX_SUBSCRIBED_TOPICS, "a subscription pattern matches more topics than a member may subscribe to; it gets the first by name");
        }
        self.matched = Some(matched);
    }

    /// What it matched when last resolved (`None`: not yet).
    pub fn matched(&self) -> Option<&BTreeSet<String>> {
        self.matched.as_ref()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn names(ns: &[&str]) -> Vec<String> {
        ns.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn a_pattern_matches_whole_names_and_never_the_internal_topic() {
        let all = names(&["orders", "orders-eu", "old-orders", "__consumer_offsets"]);
        let mut p = Pattern::compile("orders.*").unwrap();
        assert_eq!(p.matched(), None, "unresolved until listed");
        p.resolve(1, &all);
        let got: Vec<&str> = p.matched().unwrap().iter().map(String::as_str).collect();
        assert_eq!(
            got,
            ["orders", "orders-eu"],
            "old-orders does not match as a whole"
        );

        // librdkafka's form: anchored, several patterns combined.
        let mut p = Pattern::compile("(^orders-.*)|(^old-.*)").unwrap();
        p.resolve(1, &all);
        let got: Vec<&str> = p.matched().unwrap().iter().map(String::as_str).collect();
        assert_eq!(got, ["old-orders", "orders-eu"]);

        let mut p = Pattern::compile(".*").unwrap();
        p.resolve(1, &all);
        assert!(!p.matched().unwrap().contains(OFFSETS_TOPIC));
        // A new listing is resolved again; the same one is not even looked
        // at.
        let more = names(&["orders", "orders-eu", "orders-us", "old-orders"]);
        let mut p = Pattern::compile("orders-.*").unwrap();
        p.resolve(1, &all);
        p.resolve(2, &more);
        assert_eq!(p.matched().unwrap().len(), 2, "orders-us joined");
        p.resolve(2, &all);
        assert_eq!(
            p.matched().unwrap().len(),
            2,
            "listing 2 was resolved already"
        );
        p.resolve(3, &all);
        assert_eq!(p.matched().unwrap().len(), 1, "orders-us is gone");
        // At most as many topics as a member may subscribe to.
        let many: Vec<String> = (0..MAX_SUBSCRIBED_TOPICS + 5)
            .map(|i| format!("t{i:05}"))
            .collect();
        let mut p = Pattern::compile("t.*").unwrap();
        p.resolve(1, &many);
        assert_eq!(p.matched().unwrap().len(), MAX_SUBSCRIBED_TOPICS);
    }

    #[test]
    fn a_bad_pattern_is_refused_with_what_is_wrong() {
        for bad in ["orders-(", "(?=x)y", r"(a)\1", "[z-a]"] {
            let e = Pattern::compile(bad).unwrap_err();
            assert!(
                matches!(&e, GroupError::InvalidPattern { pattern, .. } if pattern == bad),
                "{bad}: {e}"
            );
        }
        let long = "a".repeat(MAX_PATTERN_LEN + 1);
        assert!(
            Pattern::compile(&long)
                .unwrap_err()
                .to_string()
                .contains("longer than")
        );
        // Compiles to more than the limit.
        assert!(Pattern::compile("(\\w{100}){100}").is_err());
        // Cannot escape the anchoring; errors point into what was sent.
        let e = Pattern::compile("orders)|(payments")
            .unwrap_err()
            .to_string();
        assert!(e.contains("orders)|(payments"), "{e}");
        assert!(!e.contains("^(?:"), "{e}");
    }
}
