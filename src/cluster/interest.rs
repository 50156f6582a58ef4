//! What each remote node has local subscribers for, so a publication is
//! sent only to the nodes that need it.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::hub::pattern::Pattern;

#[derive(Default)]
struct NodeInterest {
    exact: HashSet<Arc<str>>,
    patterns: HashMap<Arc<str>, Pattern>,
}

/// Remote interest, per node.
#[derive(Default)]
pub struct RemoteInterest {
    nodes: HashMap<Arc<str>, NodeInterest>,
}

impl RemoteInterest {
    /// Replaces everything known of `node` with `names`.
    pub fn replace(&mut self, node: &Arc<str>, names: &[Arc<str>]) {
        let entry = self.nodes.entry(node.clone()).or_default();
        *entry = NodeInterest::default();
        for name in names {
            Self::insert(entry, name);
        }
    }

    /// `node` now has local subscribers for `name`.
    pub fn add(&mut self, node: &Arc<str>, name: &Arc<str>) {
        Self::insert(self.nodes.entry(node.clone()).or_default(), name);
    }

    /// `node` no longer has local subscribers for `name`.
    pub fn remove(&mut self, node: &str, name: &str) {
        if let Some(n) = self.nodes.get_mut(node) {
            n.exact.remove(name);
            n.patterns.remove(name);
        }
    }

    /// Forgets `node` entirely.
    pub fn forget(&mut self, node: &str) {
        self.nodes.remove(node);
    }

    /// The nodes with a subscription matching `channel`.
    pub fn nodes_for(&self, channel: &str) -> Vec<Arc<str>> {
        self.nodes
            .iter()
            .filter(|(_, n)| {
                n.exact.contains(channel) || n.patterns.values().any(|p| p.matches(channel))
            })
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// How many names `node` is interested in.
    pub fn count(&self, node: &str) -> usize {
        self.nodes.get(node).map_or(0, |n| n.exact.len() + n.patterns.len())
    }

    fn insert(entry: &mut NodeInterest, name: &Arc<str>) {
        match Pattern::compile(name) {
            None => {
                entry.exact.insert(name.clone());
            }
            Some(p) => {
                entry.patterns.insert(name.clone(), p);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_by_exact_names_and_patterns() {
        let mut r = RemoteInterest::default();
        let (b, c): (Arc<str>, Arc<str>) = ("b".into(), "c".into());
        r.add(&b, &"news".into());
        r.add(&c, &"news*".into());
        let mut got = r.nodes_for("news");
        got.sort();
        assert_eq!(got, vec![b.clone(), c.clone()]);
        assert_eq!(r.nodes_for("newsroom"), vec![c.clone()]);
        r.remove("c", "news*");
        assert!(r.nodes_for("newsroom").is_empty());
        r.replace(&b, &[]);
        assert!(r.nodes_for("news").is_empty());
    }
}
