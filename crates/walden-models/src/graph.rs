//! The DAG of models, source tables and tests.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;

/// A node of the project graph.
///
/// Ordered models first, then sources, then tests, each by name: the topological order
/// breaks ties with this order.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NodeId {
    /// A model, by name.
    Model(String),
    /// A source table: (source name, table name).
    Source(String, String),
    /// A data test, by its unique name.
    Test(String),
}

impl NodeId {
    /// The dbt unique id: `model.<project>.<name>`, `source.<project>.<source>.<table>`,
    /// `test.<project>.<name>`.
    pub fn unique_id(&self, project: &str) -> String {
        match self {
            NodeId::Model(m) => format!("model.{project}.{m}"),
            NodeId::Source(s, t) => format!("source.{project}.{s}.{t}"),
            NodeId::Test(t) => format!("test.{project}.{t}"),
        }
    }

    /// The model name, for a model.
    pub fn as_model(&self) -> Option<&str> {
        match self {
            NodeId::Model(m) => Some(m),
            _ => None,
        }
    }
}

impl fmt::Display for NodeId {
    /// `name` for models and tests, `source.table` for sources.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NodeId::Model(m) | NodeId::Test(m) => f.write_str(m),
            NodeId::Source(s, t) => write!(f, "{s}.{t}"),
        }
    }
}

/// Edges both ways; every node has an entry in both maps.
#[derive(Debug, Clone, Default)]
pub(crate) struct Graph {
    pub parents: BTreeMap<NodeId, BTreeSet<NodeId>>,
    pub children: BTreeMap<NodeId, BTreeSet<NodeId>>,
}

impl Graph {
    pub fn add_node(&mut self, n: NodeId) {
        self.parents.entry(n.clone()).or_default();
        self.children.entry(n).or_default();
    }

    /// `child` depends on `parent`.
    pub fn add_edge(&mut self, parent: NodeId, child: NodeId) {
        self.add_node(parent.clone());
        self.add_node(child.clone());
        self.parents
            .entry(child.clone())
            .or_default()
            .insert(parent.clone());
        self.children.entry(parent).or_default().insert(child);
    }

    /// Every node in dependency order, ties broken by `NodeId` order; `Err` with the nodes
    /// left over when there is a cycle.
    pub fn topo_order(&self) -> Result<Vec<NodeId>, Vec<NodeId>> {
        let mut indegree: BTreeMap<&NodeId, usize> =
            self.parents.iter().map(|(n, p)| (n, p.len())).collect();
        let mut ready: BTreeSet<&NodeId> = indegree
            .iter()
            .filter(|(_, d)| **d == 0)
            .map(|(n, _)| *n)
            .collect();
        let mut out = Vec::with_capacity(indegree.len());
        while let Some(n) = ready.pop_first() {
            out.push(n.clone());
            for c in &self.children[n] {
                let d = indegree.get_mut(c).expect("every child is a node");
                *d -= 1;
                if *d == 0 {
                    ready.insert(c);
                }
            }
        }
        if out.len() == indegree.len() {
            Ok(out)
        } else {
            let done: BTreeSet<&NodeId> = out.iter().collect();
            Err(indegree
                .keys()
                .filter(|n| !done.contains(*n))
                .map(|n| (*n).clone())
                .collect())
        }
    }

    /// Each elementary cycle found by a depth-first search from every node (in order),
    /// reported once, as the path `[a, b, c]` meaning `a -> b -> c -> a`, where `x -> y`
    /// means x depends on y; each cycle starts at its smallest node.
    pub fn cycles(&self) -> Vec<Vec<NodeId>> {
        let mut found: BTreeSet<Vec<NodeId>> = BTreeSet::new();
        let mut state: BTreeMap<&NodeId, u8> = BTreeMap::new(); // 1 on stack, 2 done
        for start in self.parents.keys() {
            if state.contains_key(start) {
                continue;
            }
            // iterative DFS following "depends on" edges (parents)
            let mut stack: Vec<(&NodeId, Vec<&NodeId>)> =
                vec![(start, self.parents[start].iter().collect())];
            state.insert(start, 1);
            while let Some((node, pending)) = stack.last_mut() {
                let node = *node;
                if let Some(next) = pending.pop() {
                    match state.get(next) {
                        Some(1) => {
                            let pos = stack
                                .iter()
                                .position(|(n, _)| *n == next)
                                .expect("on stack");
                            let mut cycle: Vec<NodeId> =
                                stack[pos..].iter().map(|(n, _)| (*n).clone()).collect();
                            let min = cycle
                                .iter()
                                .enumerate()
                                .min_by_key(|(_, n)| *n)
                                .map_or(0, |(i, _)| i);
                            cycle.rotate_left(min);
                            found.insert(cycle);
                        }
                        Some(_) => {}
                        None => {
                            state.insert(next, 1);
                            stack.push((next, self.parents[next].iter().collect()));
                        }
                    }
                } else {
                    state.insert(node, 2);
                    stack.pop();
                }
            }
        }
        found.into_iter().collect()
    }

    /// Nodes reachable through `edges` from `start` within `depth` steps (`None`: any),
    /// `start` excluded.
    fn reach(
        &self,
        start: &NodeId,
        depth: Option<usize>,
        edges: &BTreeMap<NodeId, BTreeSet<NodeId>>,
    ) -> BTreeSet<NodeId> {
        let mut seen = BTreeSet::new();
        let mut queue = VecDeque::from([(start, 0usize)]);
        while let Some((n, d)) = queue.pop_front() {
            if depth.is_some_and(|max| d >= max) {
                continue;
            }
            for next in edges.get(n).into_iter().flatten() {
                if seen.insert(next.clone()) {
                    queue.push_back((next, d + 1));
                }
            }
        }
        seen.remove(start);
        seen
    }

    /// What `n` depends on, transitively, within `depth` steps.
    pub fn ancestors(&self, n: &NodeId, depth: Option<usize>) -> BTreeSet<NodeId> {
        self.reach(n, depth, &self.parents)
    }

    /// What depends on `n`, transitively, within `depth` steps.
    pub fn descendants(&self, n: &NodeId, depth: Option<usize>) -> BTreeSet<NodeId> {
        self.reach(n, depth, &self.children)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(s: &str) -> NodeId {
        NodeId::Model(s.into())
    }

    #[test]
    fn topo_order_breaks_ties_by_name() {
        let mut g = Graph::default();
        g.add_edge(m("b"), m("d"));
        g.add_edge(m("a"), m("d"));
        g.add_node(m("c"));
        g.add_edge(m("d"), m("e"));
        assert_eq!(
            g.topo_order().unwrap(),
            vec![m("a"), m("b"), m("c"), m("d"), m("e")]
        );
        assert_eq!(g.ancestors(&m("e"), Some(1)), BTreeSet::from([m("d")]));
        assert_eq!(
            g.ancestors(&m("e"), None),
            BTreeSet::from([m("a"), m("b"), m("d")])
        );
        assert_eq!(
            g.descendants(&m("a"), None),
            BTreeSet::from([m("d"), m("e")])
        );
    }

    #[test]
    fn cycles_are_named_once() {
        let mut g = Graph::default();
        // a depends on b, b on c, c on a; d on itself; e on a
        g.add_edge(m("b"), m("a"));
        g.add_edge(m("c"), m("b"));
        g.add_edge(m("a"), m("c"));
        g.add_edge(m("d"), m("d"));
        g.add_edge(m("a"), m("e"));
        let cycles = g.cycles();
        assert_eq!(cycles, vec![vec![m("a"), m("b"), m("c")], vec![m("d")]]);
        let left = g.topo_order().unwrap_err();
        assert!(left.contains(&m("a")) && left.contains(&m("e")) && left.contains(&m("d")));
    }
}
