//! The module graph of one crate and its import cycles.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// The "uses" edges of cargo-modules' DOT output, as (from, to) module
/// paths. Other lines (nodes, "owns" edges, layout) are skipped.
pub(crate) fn parse_dot(dot: &str) -> Vec<(String, String)> {
    dot.lines()
        .filter(|line| line.contains("[label=\"uses\""))
        .filter_map(|line| {
            let (from, rest) = quoted(line)?;
            let rest = rest.trim_start().strip_prefix("->")?;
            let (to, _) = quoted(rest)?;
            Some((from.to_owned(), to.to_owned()))
        })
        .collect()
}

/// The first `"..."` in `text`, and what follows it.
fn quoted(text: &str) -> Option<(&str, &str)> {
    let start = text.find('"')? + 1;
    let len = text[start..].find('"')?;
    Some((&text[start..start + len], &text[start + len + 1..]))
}

/// Which module imports which. A module's use of its own descendants is
/// left out: a parent declares its children and re-exports what they
/// define, so that edge is the shape of every Rust module tree, not a
/// dependency between two concepts. Children using their parent, and
/// siblings using each other, are kept.
#[derive(Debug, Default)]
pub(crate) struct ModuleGraph {
    edges: BTreeMap<String, BTreeSet<String>>,
}

impl ModuleGraph {
    /// Builds the graph from "uses" edges.
    pub(crate) fn from_uses(uses: impl IntoIterator<Item = (String, String)>) -> Self {
        let mut graph = Self::default();
        for (from, to) in uses {
            graph.edges.entry(to.clone()).or_default();
            let into_own_subtree = to == from || to.starts_with(&format!("{from}::"));
            let targets = graph.edges.entry(from).or_default();
            if !into_own_subtree {
                targets.insert(to);
            }
        }
        graph
    }

    /// How many modules take part in an edge.
    pub(crate) fn modules(&self) -> usize {
        self.edges.len()
    }

    /// How many edges count.
    pub(crate) fn edges(&self) -> usize {
        self.edges.values().map(BTreeSet::len).sum()
    }

    /// One cycle (first module repeated at the end) per group of modules
    /// that reach each other.
    pub(crate) fn cycles(&self) -> Vec<Vec<String>> {
        self.components()
            .into_iter()
            .filter(|group| group.len() > 1)
            .filter_map(|group| self.cycle_within(&group))
            .collect()
    }

    /// Strongly connected components, by Kosaraju's two passes.
    fn components(&self) -> Vec<BTreeSet<String>> {
        let mut order = Vec::new();
        let mut seen = BTreeSet::new();
        for start in self.edges.keys() {
            self.finish_order(start, &mut seen, &mut order);
        }
        let mut reversed: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (from, targets) in &self.edges {
            for to in targets {
                reversed.entry(to.as_str()).or_default().push(from.as_str());
            }
        }
        let mut assigned = BTreeSet::new();
        let mut groups = Vec::new();
        for start in order.iter().rev() {
            if assigned.contains(start.as_str()) {
                continue;
            }
            let mut group = BTreeSet::new();
            let mut stack = vec![start.as_str()];
            while let Some(node) = stack.pop() {
                if !assigned.insert(node.to_owned()) {
                    continue;
                }
                group.insert(node.to_owned());
                stack.extend(reversed.get(node).into_iter().flatten().copied());
            }
            groups.push(group);
        }
        groups
    }

    /// Depth-first post-order, without recursion (module trees are small,
    /// but a stack overflow is no way to report a cycle).
    fn finish_order(&self, start: &str, seen: &mut BTreeSet<String>, order: &mut Vec<String>) {
        if !seen.insert(start.to_owned()) {
            return;
        }
        let mut stack = vec![(start.to_owned(), self.targets(start))];
        while let Some((node, mut rest)) = stack.pop() {
            match rest.pop() {
                Some(next) => {
                    stack.push((node, rest));
                    if seen.insert(next.clone()) {
                        let next_targets = self.targets(&next);
                        stack.push((next, next_targets));
                    }
                }
                None => order.push(node),
            }
        }
    }

    fn targets(&self, node: &str) -> Vec<String> {
        self.edges
            .get(node)
            .map(|t| t.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// A shortest path from the group's first module back to itself, staying
    /// inside the group.
    fn cycle_within(&self, group: &BTreeSet<String>) -> Option<Vec<String>> {
        let start = group.first()?;
        let mut came_from: BTreeMap<String, String> = BTreeMap::new();
        let mut queue = VecDeque::from([start.clone()]);
        while let Some(node) = queue.pop_front() {
            for next in self.edges.get(&node).into_iter().flatten() {
                if !group.contains(next) {
                    continue;
                }
                if next == start {
                    // Back from `node` to the start, then round again.
                    let mut path = vec![node.clone()];
                    while let Some(prev) = came_from.get(path.last()?) {
                        path.push(prev.clone());
                    }
                    path.reverse();
                    path.push(start.clone());
                    return Some(path);
                }
                if !came_from.contains_key(next) && next != start {
                    came_from.insert(next.clone(), node.clone());
                    queue.push_back(next.clone());
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph(edges: &[(&str, &str)]) -> ModuleGraph {
        ModuleGraph::from_uses(
            edges
                .iter()
                .map(|(a, b)| ((*a).to_owned(), (*b).to_owned())),
        )
    }

    #[test]
    fn reads_only_uses_edges() {
        let dot = r##"digraph {
    "c::a" [label="pub mod|c::a", fillcolor="#81c169"]; // "mod" node
    "c" -> "c::a" [label="owns", color="#000000", style="solid"] [constraint=true]; // "owns" edge
    "c::a" -> "c::b" [label="uses", color="#7f7f7f", style="dashed"] [constraint=false]; // "uses" edge
}"##;
        assert_eq!(parse_dot(dot), vec![("c::a".to_owned(), "c::b".to_owned())]);
    }

    #[test]
    fn siblings_importing_each_other_are_a_cycle() {
        let cycles = graph(&[("c::a", "c::b"), ("c::b", "c::a"), ("c::b", "c::d")]).cycles();
        assert_eq!(cycles, vec![vec!["c::a", "c::b", "c::a"]]);
    }

    #[test]
    fn a_longer_loop_is_reported_along_its_edges() {
        let cycles = graph(&[
            ("c::a", "c::b"),
            ("c::b", "c::x::c"),
            ("c::x::c", "c::a"),
            ("c::a", "c::d"),
        ])
        .cycles();
        assert_eq!(cycles, vec![vec!["c::a", "c::b", "c::x::c", "c::a"]]);
    }

    #[test]
    fn a_parent_using_its_children_is_its_facade_not_a_cycle() {
        let g = graph(&[
            ("c::p", "c::p::kid"),
            ("c::p::kid", "c::p"),
            ("c::p", "c::p"),
        ]);
        assert!(g.cycles().is_empty());
        assert_eq!(g.edges(), 1);
    }

    #[test]
    fn a_child_and_its_parents_sibling_can_still_loop() {
        let cycles = graph(&[("c::p::kid", "c::q"), ("c::q", "c::p")]).cycles();
        assert!(cycles.is_empty(), "p does not use kid here: {cycles:?}");
        let cycles = graph(&[("c::p::kid", "c::q"), ("c::q", "c::p::kid")]).cycles();
        assert_eq!(cycles, vec![vec!["c::p::kid", "c::q", "c::p::kid"]]);
    }

    #[test]
    fn an_acyclic_graph_has_no_cycle() {
        let g = graph(&[("c::a", "c::b"), ("c::b", "c::d"), ("c::a", "c::d")]);
        assert!(g.cycles().is_empty());
        assert_eq!(g.modules(), 3);
    }
}
