//! The service graph (OPEA's `DAG`) on petgraph. Nodes are node ids (`"s1/MicroService"`);
//! every list this returns is in the order nodes were added, so scheduling and fan-in merges
//! are deterministic.

use std::collections::{BTreeSet, HashMap};

use petgraph::Direction;
use petgraph::algo::has_path_connecting;
use petgraph::stable_graph::{NodeIndex, StableDiGraph};
use petgraph::visit::{EdgeRef, IntoEdgeReferences};

/// Why a graph operation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GraphError {
    /// `add` of a node that exists.
    #[error("node {0} already exists")]
    DuplicateNode(String),
    /// An operation named a node that is not in the graph.
    #[error("node {0} does not exist")]
    UnknownNode(String),
    /// `flow_to(a, a)`.
    #[error("{0} cannot flow to itself")]
    SelfLoop(String),
    /// The edge would close a cycle.
    #[error("{from} >> {to} would create a cycle")]
    Cycle {
        /// Edge source.
        from: String,
        /// Edge target.
        to: String,
    },
    /// `delete_edge` of an edge that is not there.
    #[error("edge {from} >> {to} does not exist")]
    UnknownEdge {
        /// Edge source.
        from: String,
        /// Edge target.
        to: String,
    },
}

/// A directed acyclic graph of node ids.
#[derive(Debug, Clone, Default)]
pub struct Dag {
    graph: StableDiGraph<String, ()>,
    index: HashMap<String, NodeIndex>,
    /// Insertion rank of each node, the tie-breaker everywhere.
    rank: HashMap<String, usize>,
    next_rank: usize,
}

impl Dag {
    /// An empty graph.
    pub fn new() -> Self {
        Self::default()
    }

    /// Add a node; an existing name is an error.
    pub fn add_node(&mut self, node: &str) -> Result<(), GraphError> {
        if self.index.contains_key(node) {
            return Err(GraphError::DuplicateNode(node.to_string()));
        }
        let idx = self.graph.add_node(node.to_string());
        self.index.insert(node.to_string(), idx);
        self.rank.insert(node.to_string(), self.next_rank);
        self.next_rank += 1;
        Ok(())
    }

    /// Add a node unless it exists.
    pub fn add_node_if_not_exists(&mut self, node: &str) {
        let _ = self.add_node(node);
    }

    /// Whether `node` is in the graph.
    pub fn contains(&self, node: &str) -> bool {
        self.index.contains_key(node)
    }

    /// Remove a node and its edges.
    pub fn delete_node(&mut self, node: &str) -> Result<(), GraphError> {
        let idx = self.index.remove(node).ok_or_else(|| GraphError::UnknownNode(node.to_string()))?;
        self.graph.remove_node(idx);
        self.rank.remove(node);
        Ok(())
    }

    /// Remove a node if present.
    pub fn delete_node_if_exists(&mut self, node: &str) {
        let _ = self.delete_node(node);
    }

    fn idx(&self, node: &str) -> Result<NodeIndex, GraphError> {
        self.index.get(node).copied().ok_or_else(|| GraphError::UnknownNode(node.to_string()))
    }

    /// Add `from >> to`, refusing unknown nodes, self-loops and cycles. Adding an existing
    /// edge again is a no-op.
    pub fn add_edge(&mut self, from: &str, to: &str) -> Result<(), GraphError> {
        let a = self.idx(from)?;
        let b = self.idx(to)?;
        if a == b {
            return Err(GraphError::SelfLoop(from.to_string()));
        }
        if self.graph.contains_edge(a, b) {
            return Ok(());
        }
        if has_path_connecting(&self.graph, b, a, None) {
            return Err(GraphError::Cycle { from: from.to_string(), to: to.to_string() });
        }
        self.graph.add_edge(a, b, ());
        Ok(())
    }

    /// Remove `from >> to`.
    pub fn delete_edge(&mut self, from: &str, to: &str) -> Result<(), GraphError> {
        let a = self.idx(from)?;
        let b = self.idx(to)?;
        let e = self
            .graph
            .find_edge(a, b)
            .ok_or_else(|| GraphError::UnknownEdge { from: from.to_string(), to: to.to_string() })?;
        self.graph.remove_edge(e);
        Ok(())
    }

    fn sorted(&self, mut v: Vec<String>) -> Vec<String> {
        v.sort_by_key(|n| self.rank.get(n).copied().unwrap_or(usize::MAX));
        v
    }

    fn neighbors(&self, node: &str, dir: Direction) -> Vec<String> {
        let Ok(idx) = self.idx(node) else { return Vec::new() };
        let v = self
            .graph
            .edges_directed(idx, dir)
            .map(|e| {
                let other = if dir == Direction::Outgoing { e.target() } else { e.source() };
                self.graph[other].clone()
            })
            .collect();
        self.sorted(v)
    }

    /// Direct predecessors.
    pub fn predecessors(&self, node: &str) -> Vec<String> {
        self.neighbors(node, Direction::Incoming)
    }

    /// Direct successors.
    pub fn downstream(&self, node: &str) -> Vec<String> {
        self.neighbors(node, Direction::Outgoing)
    }

    /// Every node reachable from `node` (excluding it).
    pub fn all_downstreams(&self, node: &str) -> Vec<String> {
        let Ok(start) = self.idx(node) else { return Vec::new() };
        let mut seen = BTreeSet::new();
        let mut stack = vec![start];
        while let Some(n) = stack.pop() {
            for next in self.graph.neighbors_directed(n, Direction::Outgoing) {
                if seen.insert(next) {
                    stack.push(next);
                }
            }
        }
        self.sorted(seen.into_iter().map(|i| self.graph[i].clone()).collect())
    }

    /// Nodes without successors.
    pub fn all_leaves(&self) -> Vec<String> {
        self.nodes().into_iter().filter(|n| self.downstream(n).is_empty()).collect()
    }

    /// Nodes without predecessors (the entry points).
    pub fn ind_nodes(&self) -> Vec<String> {
        self.nodes().into_iter().filter(|n| self.predecessors(n).is_empty()).collect()
    }

    /// Every node, in insertion order.
    pub fn nodes(&self) -> Vec<String> {
        self.sorted(self.index.keys().cloned().collect())
    }

    /// Every edge as `(from, to)`, sorted.
    pub fn edges(&self) -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = (&self.graph)
            .edge_references()
            .map(|e| (self.graph[e.source()].clone(), self.graph[e.target()].clone()))
            .collect();
        v.sort_by_key(|(a, b)| (self.rank[a], self.rank[b]));
        v
    }

    /// Kahn's algorithm; among ready nodes the earliest added goes first.
    pub fn topological_sort(&self) -> Vec<String> {
        let mut indegree: HashMap<String, usize> =
            self.nodes().into_iter().map(|n| (n.clone(), self.predecessors(&n).len())).collect();
        let mut ready: BTreeSet<(usize, String)> =
            indegree.iter().filter(|(_, d)| **d == 0).map(|(n, _)| (self.rank[n], n.clone())).collect();
        let mut out = Vec::with_capacity(indegree.len());
        while let Some((_, n)) = ready.pop_first() {
            for d in self.downstream(&n) {
                let e = indegree.get_mut(&d).expect("node known");
                *e -= 1;
                if *e == 0 {
                    ready.insert((self.rank[&d], d));
                }
            }
            out.push(n);
        }
        out
    }

    /// Number of nodes.
    pub fn size(&self) -> usize {
        self.index.len()
    }
}
