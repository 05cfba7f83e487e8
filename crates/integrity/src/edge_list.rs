//! A graph as callers of the solvers write it: a list of edges
//! `{"source": .., "target": .., "capacity": ..}` between nodes named by text or
//! numbers (a missing capacity is 1). This module turns such a list, read one
//! edge at a time by whoever parses the document, into the solvers' input:
//! dense node indices in order of first appearance and `(u, v, capacity)`
//! triples.
//!
//! It owns the rules and their messages (what an edge may hold, which numbers a
//! capacity may be) and how much it may take: the edge count is checked against
//! [`Limits`] before anything is allocated, every allocation whose size comes
//! from the input is fallible ([`Error::OutOfMemory`] instead of an abort), and
//! the interrupt hook runs every few thousand edges while reading. It does not
//! parse JSON: the extension reads PostgreSQL's binary jsonb in place and hands
//! each edge over as an [`EdgeRef`] borrowing from it.

use std::collections::HashMap;

use crate::control::{Control, Limits};
use crate::Error;

/// A node's name as given: text, or a number (kept as its canonical text, so
/// that `1` and `1.0` name the same node and it is written back as a number).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeId {
    Text(String),
    Number(String),
}

impl NodeId {
    /// The name, as nodes are told apart: the text, or the number's text.
    pub fn key(&self) -> &str {
        match self {
            NodeId::Text(s) | NodeId::Number(s) => s,
        }
    }

    /// The node as the solvers' answers name it: text as a JSON string, a
    /// number as the JSON number it was.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            NodeId::Text(s) => serde_json::Value::String(s.clone()),
            NodeId::Number(s) => {
                serde_json::from_str(s).unwrap_or_else(|_| serde_json::Value::String(s.clone()))
            }
        }
    }
}

/// One end of an edge as read, borrowing from the document.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum NodeRef<'a> {
    Text(&'a str),
    /// A number, as its canonical text.
    Number(&'a str),
    /// Anything else (null, a boolean, an object, an array).
    Other,
}

/// An edge's capacity as read.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum CapacityRef {
    Number(f64),
    /// Not a number.
    Other,
}

/// One element of the edge list as read. `None` fields are absent keys.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct EdgeRef<'a> {
    pub source: Option<NodeRef<'a>>,
    pub target: Option<NodeRef<'a>>,
    pub capacity: Option<CapacityRef>,
    /// A key other than source, target and capacity, if the element has one.
    pub unknown_key: Option<&'a str>,
}

/// The keys an edge may have, for hints.
pub const EDGE_KEYS: &str = "source, target and optionally capacity (default 1)";

/// The solvers' input: node names by index, and edges between indices.
#[derive(Debug, Default, PartialEq)]
pub struct EdgeList {
    pub ids: Vec<NodeId>,
    pub edges: Vec<(u32, u32, f64)>,
}

/// Builds an [`EdgeList`] one element at a time.
pub struct EdgeListReader<'c, 'h> {
    control: &'c mut Control<'h>,
    index: HashMap<String, u32>,
    list: EdgeList,
}

fn out_of_memory(what: &'static str) -> impl FnOnce(std::collections::TryReserveError) -> Error {
    move |_| Error::OutOfMemory { what }
}

fn edge_error(edge: usize, problem: impl Into<String>) -> Error {
    Error::Edge {
        edge,
        problem: problem.into(),
    }
}

impl<'c, 'h> EdgeListReader<'c, 'h> {
    /// A reader for a list of `edges` elements; refused when that is more than
    /// the limits allow, before anything is allocated.
    pub fn new(edges: usize, control: &'c mut Control<'h>) -> Result<Self, Error> {
        control.limits().check(0, edges)?;
        let mut list = EdgeList::default();
        list.edges
            .try_reserve_exact(edges)
            .map_err(out_of_memory("edges"))?;
        Ok(EdgeListReader {
            control,
            index: HashMap::new(),
            list,
        })
    }

    /// The limits this reader enforces.
    pub fn limits(&self) -> Limits {
        self.control.limits()
    }

    /// Adds the next element (`None`: it is not an object).
    pub fn push(&mut self, element: Option<EdgeRef<'_>>) -> Result<(), Error> {
        let i = self.list.edges.len();
        self.control.work(1)?;
        let edge = element.ok_or_else(|| edge_error(i, "must be an object"))?;
        if let Some(key) = edge.unknown_key {
            return Err(edge_error(i, format!("unknown key \"{key}\"")));
        }
        let source = self.node(i, "source", edge.source)?;
        let target = self.node(i, "target", edge.target)?;
        let capacity = match edge.capacity {
            None => 1.0,
            Some(CapacityRef::Number(c)) => c,
            Some(CapacityRef::Other) => return Err(edge_error(i, "capacity must be a number")),
        };
        if !capacity.is_finite() || capacity < 0.0 {
            return Err(edge_error(
                i,
                format!("capacity must be a finite number ≥ 0, got {capacity}"),
            ));
        }
        // More elements than announced are still bounded by the limits.
        self.control.limits().check(0, i + 1)?;
        self.list
            .edges
            .try_reserve(1)
            .map_err(out_of_memory("edges"))?;
        self.list.edges.push((source, target, capacity));
        Ok(())
    }

    /// The index of the node `end` names, added at first sight.
    fn node(&mut self, edge: usize, end: &str, id: Option<NodeRef<'_>>) -> Result<u32, Error> {
        let id = match id {
            Some(NodeRef::Text(s)) => NodeId::Text(copy(s)?),
            Some(NodeRef::Number(s)) => NodeId::Number(copy(s)?),
            _ => {
                return Err(edge_error(
                    edge,
                    format!("\"{end}\" must be a string or a number"),
                ))
            }
        };
        if let Some(&known) = self.index.get(id.key()) {
            return Ok(known);
        }
        let next = self.list.ids.len();
        self.control.limits().check(next + 1, 0)?;
        self.list
            .ids
            .try_reserve(1)
            .map_err(out_of_memory("node names"))?;
        self.index
            .try_reserve(1)
            .map_err(out_of_memory("node names"))?;
        self.index.insert(copy(id.key())?, next as u32);
        self.list.ids.push(id);
        Ok(next as u32)
    }

    /// The list read so far.
    pub fn finish(self) -> EdgeList {
        self.list
    }
}

/// `s` in a string of its own, allocated fallibly.
fn copy(s: &str) -> Result<String, Error> {
    let mut owned = String::new();
    owned
        .try_reserve_exact(s.len())
        .map_err(out_of_memory("node names"))?;
    owned.push_str(s);
    Ok(owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_are_named_in_answers_as_they_were_given() {
        assert_eq!(NodeId::Text("a".into()).to_json(), serde_json::json!("a"));
        assert_eq!(NodeId::Text("1".into()).to_json(), serde_json::json!("1"));
        assert_eq!(NodeId::Number("1".into()).to_json(), serde_json::json!(1));
        assert_eq!(
            NodeId::Number("2.5".into()).to_json(),
            serde_json::json!(2.5)
        );
    }

    fn edge<'a>(source: NodeRef<'a>, target: NodeRef<'a>) -> Option<EdgeRef<'a>> {
        Some(EdgeRef {
            source: Some(source),
            target: Some(target),
            ..EdgeRef::default()
        })
    }

    fn read(elements: &[Option<EdgeRef<'_>>]) -> Result<EdgeList, Error> {
        let mut control = Control::default();
        let mut reader = EdgeListReader::new(elements.len(), &mut control)?;
        for &e in elements {
            reader.push(e)?;
        }
        Ok(reader.finish())
    }

    #[test]
    fn nodes_are_numbered_in_order_of_first_appearance() {
        use NodeRef::*;
        let list = read(&[
            edge(Text("b"), Number("1")),
            edge(Number("1"), Text("a")),
            Some(EdgeRef {
                capacity: Some(CapacityRef::Number(2.5)),
                ..edge(Text("a"), Text("b")).unwrap()
            }),
        ])
        .unwrap();
        assert_eq!(
            list.ids,
            [
                NodeId::Text("b".into()),
                NodeId::Number("1".into()),
                NodeId::Text("a".into())
            ]
        );
        assert_eq!(list.edges, [(0, 1, 1.0), (1, 2, 1.0), (2, 0, 2.5)]);
    }

    #[test]
    fn a_number_and_its_text_name_the_same_node() {
        let list = read(&[edge(NodeRef::Number("7"), NodeRef::Text("7"))]).unwrap();
        assert_eq!(list.ids, [NodeId::Number("7".into())]);
        assert_eq!(list.edges, [(0, 0, 1.0)]);
    }

    #[test]
    fn each_bad_element_is_named_by_its_position() {
        use NodeRef::*;
        let good = edge(Text("a"), Text("b"));
        let cases: [(Option<EdgeRef>, &str); 6] = [
            (None, "edge 1: must be an object"),
            (
                Some(EdgeRef {
                    unknown_key: Some("weight"),
                    ..good.unwrap()
                }),
                "edge 1: unknown key \"weight\"",
            ),
            (
                Some(EdgeRef {
                    source: None,
                    ..good.unwrap()
                }),
                "edge 1: \"source\" must be a string or a number",
            ),
            (
                edge(Text("a"), Other),
                "edge 1: \"target\" must be a string or a number",
            ),
            (
                Some(EdgeRef {
                    capacity: Some(CapacityRef::Other),
                    ..good.unwrap()
                }),
                "edge 1: capacity must be a number",
            ),
            (
                Some(EdgeRef {
                    capacity: Some(CapacityRef::Number(-1.0)),
                    ..good.unwrap()
                }),
                "edge 1: capacity must be a finite number ≥ 0, got -1",
            ),
        ];
        for (bad, message) in cases {
            let e = read(&[good, bad]).unwrap_err();
            assert_eq!(e.to_string(), message);
        }
        for c in [f64::NAN, f64::INFINITY] {
            let bad = Some(EdgeRef {
                capacity: Some(CapacityRef::Number(c)),
                ..good.unwrap()
            });
            assert!(matches!(read(&[bad]), Err(Error::Edge { edge: 0, .. })));
        }
    }

    #[test]
    fn more_edges_than_the_limit_are_refused_before_any_is_read() {
        let mut control = Control::new(Limits { max_edges: 3 });
        assert_eq!(
            EdgeListReader::new(4, &mut control).err(),
            Some(Error::TooLarge {
                what: "edges",
                count: 4,
                limit: 3
            })
        );
        // An element count that was wrong is caught at the element past the limit.
        let mut control = Control::new(Limits { max_edges: 3 });
        let mut reader = EdgeListReader::new(1, &mut control).unwrap();
        let e = edge(NodeRef::Text("a"), NodeRef::Text("b"));
        for _ in 0..3 {
            reader.push(e).unwrap();
        }
        assert!(matches!(
            reader.push(e),
            Err(Error::TooLarge { what: "edges", .. })
        ));
    }

    #[test]
    fn reading_calls_the_interrupt_hook_and_stops_when_it_says_so() {
        let mut calls = 0;
        let mut hook = || {
            calls += 1;
            if calls == 3 {
                Err(Error::Cancelled("statement timeout".into()))
            } else {
                Ok(())
            }
        };
        let mut control = Control::default().with_interrupt(&mut hook);
        let edges = 1 << 20;
        let mut reader = EdgeListReader::new(edges, &mut control).unwrap();
        let names: Vec<String> = (0..edges + 1).map(|i| i.to_string()).collect();
        let mut read = 0;
        let outcome = (0..edges).try_for_each(|i| {
            read += 1;
            reader.push(edge(
                NodeRef::Number(&names[i]),
                NodeRef::Number(&names[i + 1]),
            ))
        });
        assert_eq!(outcome, Err(Error::Cancelled("statement timeout".into())));
        // The hook ran every CHECK_INTERVAL elements: the third call came
        // after three intervals, long before the end of the list.
        assert_eq!(read, 3 * crate::control::CHECK_INTERVAL as usize);
    }
}
