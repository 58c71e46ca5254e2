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
use super::state::GroupError;

/// Longest pattern accepted, in bytes.
pub const MAX_PATTERN_LEN: usize = 4096;

/// Most memory one compiled pattern may take.
const MAX_COMPILED_BYTES: usize = 1 << 20;

/// A compiled subscription pattern and the topics it matched last.
#[derive(Debug, Clone)]
pub struct Pattern {
    re: Regex,
    /// `None` until resolved against a topic listing.
    matched: Option<BTreeSet<String>>,
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
        let re = RegexBuilder::new(&format!("^(?:{pattern})$"))
            .size_limit(MAX_COMPILED_BYTES)
            .build()
            .map_err(|e| invalid(e.to_string()))?;
        Ok(Self { re, matched: None })
    }

    /// True when the whole of `topic` matches.
    pub fn matches(&self, topic: &str) -> bool {
        topic != OFFSETS_TOPIC && self.re.is_match(topic)
    }

    /// Resolves the pattern against every live topic's name.
    pub fn resolve(&mut self, names: &[String]) {
        self.matched = Some(names.iter().filter(|n| self.matches(n)).cloned().collect());
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
        p.resolve(&all);
        let got: Vec<&str> = p.matched().unwrap().iter().map(String::as_str).collect();
        assert_eq!(
            got,
            ["orders", "orders-eu"],
            "old-orders does not match as a whole"
        );

        // librdkafka's form: anchored, several patterns combined.
        let mut p = Pattern::compile("(^orders-.*)|(^old-.*)").unwrap();
        p.resolve(&all);
        let got: Vec<&str> = p.matched().unwrap().iter().map(String::as_str).collect();
        assert_eq!(got, ["old-orders", "orders-eu"]);

        let mut p = Pattern::compile(".*").unwrap();
        p.resolve(&all);
        assert!(!p.matched().unwrap().contains(OFFSETS_TOPIC));
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
    }
}
