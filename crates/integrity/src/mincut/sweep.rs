//! The flow sweep: for graphs on which contraction rounds stall, typically
//! those whose edges all tie (cycles, tori, hypercubes, regular graphs), where
//! no local test can tell a minimum-cut edge from another.
//!
//! A set `S` grows from one vertex, taking next the vertex `t` with the most
//! residual capacity from it (maximum adjacency, as in a Stoer-Wagner phase,
//! but counting what the flow left free). Before `t` joins, augmenting paths
//! push flow from `S` to `t` until the flow reaches λ̂: then no cut lighter than
//! λ̂ separates `t` from `S`, and merging them keeps every such cut. If the flow
//! stops short, the vertices that still reach `t` in the residual graph are the
//! `t` side of a minimum `S`–`t` cut, lighter than λ̂: it becomes λ̂. When `S`
//! is everything, λ̂ is λ: the minimum cut separates the first vertex from some
//! vertex, and when the first such vertex joined, its flow found a cut no
//! heavier.
//!
//! The flow is never reset: what went into `t` circulates inside `S` afterwards,
//! and later paths reroute it. On a cycle, the first path goes around the whole
//! cycle; the next vertex is then the one that path left with two units of
//! residual capacity from S, which needs no search at all. Paths are found in
//! phases (breadth-first levels from `t` until the first level that touches
//! `S`, then a blocking flow along those levels), so many short paths cost one
//! search. Capacities are exact integers here, so the flow is exact.
//!
//! The work is bound by memory latency on large graphs, so each arc keeps its
//! target, its twin and its residual side by side, each vertex its mark, and
//! the vertices are renumbered in breadth-first order from the first one: the
//! sweep then works through nearby memory.

use std::collections::BinaryHeap;

use super::sparse::{Csr, Keyed};
use super::weight::Weight;
use crate::control::Control;
use crate::Error;

/// A directed entry `v → target` of `v`'s row.
#[derive(Clone, Copy)]
struct Arc<W> {
    target: u32,
    /// The same edge's entry in `target`'s row.
    twin: u32,
    /// The residual capacity of the arc `target → v`, into this row's vertex.
    /// The arc `v → target` has `2·capacity − into` left.
    into: W,
}

/// A vertex's place in the current phase: in S, in the phase's levels (its
/// `stamp` is the phase), or neither.
#[derive(Clone, Copy)]
struct Mark {
    stamp: u32,
    level: u32,
}

const UNREACHED: u32 = 0;
const IN_S: u32 = u32::MAX;

struct Sweep<W> {
    offsets: Vec<usize>,
    arcs: Vec<Arc<W>>,
    marks: Vec<Mark>,
    /// The next entry of each row to try in the current phase (Dinic's current arc).
    next_arc: Vec<usize>,
    phase: u32,
    queue: Vec<u32>,
    /// `key[v]`: the residual capacity of the arcs from S into `v`, for v ∉ S.
    key: Vec<W>,
    frontier: Frontier<W>,
}

/// The vertices outside S by key, with stale entries skipped when taken. A key
/// at or above λ̂ needs no flow at all, so such keys are all equal here
/// ("limited priorities", as in VieCut): when λ̂ is a small integer, a bucket
/// per key makes every step O(1), and taking the vertex raised last first keeps
/// the sweep in one neighbourhood. Otherwise, a binary heap.
enum Frontier<W> {
    Buckets { buckets: Vec<Vec<u32>>, top: usize },
    Heap(BinaryHeap<Keyed<W>>),
}

/// Bucket queues are used below this λ̂. Small connectivities (tori, regular
/// graphs, hypercubes) gain from them; on dense graphs with λ̂ in the
/// thousands, taking the latest vertex first reroutes flow badly (K₂₀₀₀ took
/// four times longer), and the heap is better.
const MAX_BUCKETS: usize = 64;

impl<W: Weight> Frontier<W> {
    fn new(lambda_hat: W, k: usize) -> Self {
        let cap = lambda_hat.bucket(MAX_BUCKETS);
        if cap < MAX_BUCKETS {
            Frontier::Buckets {
                buckets: vec![Vec::new(); cap + 1],
                top: 0,
            }
        } else {
            Frontier::Heap(BinaryHeap::with_capacity(k))
        }
    }

    fn push(&mut self, key: W, v: u32) {
        match self {
            Frontier::Buckets { buckets, top } => {
                let b = key.bucket(buckets.len() - 1);
                buckets[b].push(v);
                *top = (*top).max(b);
            }
            Frontier::Heap(heap) => heap.push(Keyed(key, v)),
        }
    }

    /// The vertex with the largest key for which `current(v)` still holds.
    fn pop(&mut self, current: impl Fn(u32, W) -> bool, keys: &[W]) -> Option<u32> {
        match self {
            Frontier::Buckets { buckets, top } => loop {
                match buckets[*top].pop() {
                    Some(v) => {
                        let key = keys[v as usize];
                        if current(v, key) && key.bucket(buckets.len() - 1) == *top {
                            return Some(v);
                        }
                    }
                    None if *top == 0 => return None,
                    None => *top -= 1,
                }
            },
            Frontier::Heap(heap) => loop {
                let Keyed(key, v) = heap.pop()?;
                if current(v, key) && key == keys[v as usize] {
                    return Some(v);
                }
            },
        }
    }
}

/// Runs the sweep over `graph` against the bound `lambda_hat`. Returns the
/// lightest cut found below it, as a side over `graph`'s vertices.
pub(super) fn solve<W: Weight>(
    graph: Csr<W>,
    mut lambda_hat: W,
    control: &mut Control,
) -> Result<Option<(W, Vec<bool>)>, Error> {
    debug_assert!(W::EXACT, "flows need exact capacities");
    let k = graph.len();
    let first = (0..k as u32)
        .max_by(|&a, &b| graph.degree(a as usize).order(&graph.degree(b as usize)))
        .unwrap_or(0);
    let (mut sweep, renumbered) = Sweep::new(graph, first, lambda_hat, control)?;
    let mut best: Option<(W, Vec<bool>)> = None;
    sweep.join(0);
    let mut joined = 1;
    while joined < k {
        let marks = &sweep.marks;
        let Some(t) = sweep
            .frontier
            .pop(|v, _| marks[v as usize].stamp != IN_S, &sweep.key)
        else {
            // Nothing outside S is next to it: S is a side of a cut of weight
            // 0. (The rounds hand over connected graphs, so this is a guard.)
            let side = sweep.marks.iter().map(|m| m.stamp != IN_S).collect();
            best = Some((W::ZERO, side));
            break;
        };
        if let Some(cut) = sweep.flow_to(t, lambda_hat, control)? {
            lambda_hat = cut.0;
            best = Some(cut);
        }
        sweep.join(t);
        joined += 1;
        control.work(1)?;
    }
    Ok(best.map(|(value, side)| {
        let side = renumbered.iter().map(|&v| side[v as usize]).collect();
        (value, side)
    }))
}

impl<W: Weight> Sweep<W> {
    /// Renumbers the vertices in breadth-first order from `first` (which
    /// becomes 0), and lays out the arcs with every row sorted by target (by
    /// transposing the symmetric graph), each paired with its twin: for u
    /// ascending, the entries `v → u` with `u < v` come in order in v's row.
    /// Returns the new number of every vertex too.
    fn new(
        graph: Csr<W>,
        first: u32,
        lambda_hat: W,
        control: &mut Control,
    ) -> Result<(Self, Vec<u32>), Error> {
        let k = graph.len();
        let mut renumbered = vec![u32::MAX; k];
        let mut order = Vec::with_capacity(k);
        renumbered[first as usize] = 0;
        order.push(first);
        let mut head = 0;
        while head < order.len() {
            let v = order[head];
            head += 1;
            for (u, _) in graph.neighbors(v) {
                if renumbered[u as usize] == u32::MAX {
                    renumbered[u as usize] = order.len() as u32;
                    order.push(u);
                }
            }
            control.work(graph.row(v).len() + 1)?;
        }
        let mut offsets = Vec::with_capacity(k + 1);
        offsets.push(0);
        for &v in &order {
            offsets.push(offsets.last().copied().unwrap_or(0) + graph.row(v).len());
        }
        let mut cursor = offsets.clone();
        let mut arcs = vec![
            Arc {
                target: 0,
                twin: 0,
                into: W::ZERO,
            };
            graph.entries()
        ];
        for (v, &old) in order.iter().enumerate() {
            for (u, w) in graph.neighbors(old) {
                let u = renumbered[u as usize] as usize;
                arcs[cursor[u]] = Arc {
                    target: v as u32,
                    twin: 0,
                    into: w,
                };
                cursor[u] += 1;
            }
            control.work(graph.row(old).len() + 1)?;
        }
        drop(graph);
        cursor.copy_from_slice(&offsets);
        for u in 0..k {
            for e in offsets[u]..offsets[u + 1] {
                let v = arcs[e].target as usize;
                if u < v {
                    let f = cursor[v];
                    debug_assert_eq!(arcs[f].target as usize, u);
                    cursor[v] += 1;
                    arcs[e].twin = f as u32;
                    arcs[f].twin = e as u32;
                }
            }
            control.work(offsets[u + 1] - offsets[u] + 1)?;
        }
        let sweep = Sweep {
            offsets,
            arcs,
            marks: vec![
                Mark {
                    stamp: UNREACHED,
                    level: 0
                };
                k
            ],
            next_arc: vec![0; k],
            phase: UNREACHED,
            queue: Vec::new(),
            key: vec![W::ZERO; k],
            frontier: Frontier::new(lambda_hat, k),
        };
        Ok((sweep, renumbered))
    }

    fn row(&self, v: u32) -> std::ops::Range<usize> {
        self.offsets[v as usize]..self.offsets[v as usize + 1]
    }

    fn in_s(&self, v: u32) -> bool {
        self.marks[v as usize].stamp == IN_S
    }

    /// Moves `v` into S: its arcs to the vertices outside add to their keys.
    fn join(&mut self, v: u32) {
        self.marks[v as usize].stamp = IN_S;
        for e in self.row(v) {
            let arc = self.arcs[e];
            let u = arc.target as usize;
            if self.marks[u].stamp != IN_S {
                // The residual of the arc v → u is what is left into u.
                let free = self.arcs[arc.twin as usize].into;
                self.key[u] = self.key[u].plus(free);
                self.frontier.push(self.key[u], u as u32);
            }
        }
    }

    /// Pushes flow from S into `t` until it reaches `lambda_hat`. Returns the `t`
    /// side of a minimum S–t cut if that cut is lighter.
    fn flow_to(
        &mut self,
        t: u32,
        lambda_hat: W,
        control: &mut Control,
    ) -> Result<Option<(W, Vec<bool>)>, Error> {
        // The arcs straight from S first: no search needed.
        let mut flow = W::ZERO;
        for e in self.row(t) {
            if flow >= lambda_hat {
                break;
            }
            let arc = self.arcs[e];
            if !arc.into.is_zero() && self.in_s(arc.target) {
                let delta = arc.into.min(lambda_hat.minus(flow));
                self.push(e, delta);
                flow = flow.plus(delta);
            }
        }
        control.work(self.row(t).len())?;
        while flow < lambda_hat {
            let Some(depth) = self.levels(t, control)? else {
                return self.residual_side(control).map(Some);
            };
            flow = flow.plus(self.blocking_flow(t, depth, lambda_hat.minus(flow), control)?);
        }
        Ok(None)
    }

    /// Moves `delta` along the arc into this entry's vertex.
    fn push(&mut self, e: usize, delta: W) {
        let arc = &mut self.arcs[e];
        arc.into = arc.into.minus(delta);
        let back = arc.twin as usize;
        self.arcs[back].into = self.arcs[back].into.plus(delta);
    }

    /// Breadth-first levels from `t` against the residual arcs, until a vertex
    /// of S is met. Returns the level of S then, or `None` if S is out of reach
    /// (the queue then holds every vertex that still reaches `t`).
    fn levels(&mut self, t: u32, control: &mut Control) -> Result<Option<u32>, Error> {
        self.phase += 1;
        if self.phase == IN_S {
            for mark in &mut self.marks {
                if mark.stamp != IN_S {
                    mark.stamp = UNREACHED;
                }
            }
            self.phase = 1;
        }
        let phase = self.phase;
        self.queue.clear();
        self.queue.push(t);
        self.marks[t as usize] = Mark {
            stamp: phase,
            level: 0,
        };
        let mut head = 0;
        while head < self.queue.len() {
            let v = self.queue[head];
            head += 1;
            let level = self.marks[v as usize].level + 1;
            let row = self.row(v);
            control.work(row.len() + 1)?;
            for arc in &self.arcs[row] {
                if arc.into.is_zero() {
                    continue;
                }
                let mark = &mut self.marks[arc.target as usize];
                if mark.stamp == IN_S {
                    return Ok(Some(level));
                }
                if mark.stamp != phase {
                    *mark = Mark {
                        stamp: phase,
                        level,
                    };
                    self.queue.push(arc.target);
                }
            }
        }
        Ok(None)
    }

    /// Pushes up to `need` along shortest residual paths S → … → t whose levels
    /// rise by one per step toward S (S is at `depth`). Returns what it pushed.
    fn blocking_flow(
        &mut self,
        t: u32,
        depth: u32,
        need: W,
        control: &mut Control,
    ) -> Result<W, Error> {
        for &v in &self.queue {
            self.next_arc[v as usize] = self.offsets[v as usize];
        }
        let mut pushed = W::ZERO;
        // The path from t: the entries taken, and the vertices they leave from.
        let mut path: Vec<usize> = Vec::with_capacity(depth as usize);
        let mut at: Vec<u32> = vec![t];
        // `at` starts with t and never loses it: the walk stops when t is dead.
        while let (true, Some(&v)) = (pushed < need, at.last()) {
            match self.advance(v, depth, control)? {
                Some(e) => {
                    let u = self.arcs[e].target;
                    path.push(e);
                    if self.in_s(u) {
                        pushed = pushed.plus(self.augment(&path, need.minus(pushed)));
                        path.clear();
                        at.truncate(1);
                    } else {
                        at.push(u);
                    }
                }
                None => {
                    // v leads nowhere in this phase.
                    self.marks[v as usize].stamp = UNREACHED;
                    if v == t {
                        break;
                    }
                    at.pop();
                    path.pop();
                    if let Some(&parent) = at.last() {
                        self.next_arc[parent as usize] += 1;
                    }
                }
            }
        }
        Ok(pushed)
    }

    /// The first usable entry of `v`'s row from its current arc: residual into `v`
    /// and leading one level up, or to S from the level just below S.
    fn advance(
        &mut self,
        v: u32,
        depth: u32,
        control: &mut Control,
    ) -> Result<Option<usize>, Error> {
        let end = self.offsets[v as usize + 1];
        let start = self.next_arc[v as usize];
        let up = self.marks[v as usize].level + 1;
        let phase = self.phase;
        let mut e = start;
        let found = loop {
            if e == end {
                break None;
            }
            let arc = self.arcs[e];
            if !arc.into.is_zero() {
                let mark = self.marks[arc.target as usize];
                let usable = if mark.stamp == IN_S {
                    up == depth
                } else {
                    mark.stamp == phase && mark.level == up && up < depth
                };
                if usable {
                    break Some(e);
                }
            }
            e += 1;
        };
        self.next_arc[v as usize] = e;
        control.work(e - start + 1)?;
        Ok(found)
    }

    /// Pushes the path's bottleneck (at most `limit`) from S to t. `path[i]` is
    /// the entry from the i-th vertex of the path (t first) to the next; the
    /// last one leads to S, and the vertex it leaves has that much less
    /// residual capacity from S.
    fn augment(&mut self, path: &[usize], limit: W) -> W {
        let delta = path.iter().fold(limit, |d, &e| d.min(self.arcs[e].into));
        for &e in path {
            self.push(e, delta);
        }
        if let [_, .., from_s] = *path {
            let x = self.arcs[self.arcs[from_s].twin as usize].target as usize;
            self.key[x] = self.key[x].minus(delta);
            self.frontier.push(self.key[x], x as u32);
        }
        delta
    }

    /// The side made of the vertices the last search reached (they all reach
    /// `t`), and the weight of the edges leaving it. An edge's capacity is half
    /// the residuals of its two arcs.
    fn residual_side(&self, control: &mut Control) -> Result<(W, Vec<bool>), Error> {
        let mut side = vec![false; self.marks.len()];
        for &v in &self.queue {
            side[v as usize] = true;
        }
        let mut value = W::ZERO;
        for &v in &self.queue {
            for arc in &self.arcs[self.row(v)] {
                if !side[arc.target as usize] {
                    let capacity = arc.into.plus(self.arcs[arc.twin as usize].into).half();
                    value = value.plus(capacity);
                }
            }
            control.work(self.row(v).len())?;
        }
        Ok((value, side))
    }
}
