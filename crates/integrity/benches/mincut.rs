//! `make bench`: our exact minimum cut against rustworkx-core's Stoer-Wagner, and
//! our λ₂ against a dense eigensolver or a closed form, on the same graphs in the
//! same run.
//!
//! Each graph is generated once from a fixed seed, outside any timer. The peer
//! runs in a child process (this binary with `--peer CASE`), which builds its own
//! copy of the graph and its petgraph form before its timer starts; the parent
//! kills it after [`PEER_BUDGET`] and records null. Ours and the peer alternate,
//! and medians are reported. Results go to stdout as tables and to
//! `target/bench/mincut.jsonl`, one JSON object per case.
//!
//! Three tables:
//! - weighted families: random graphs almost always have a trivial minimum cut
//!   (the lightest vertex) and flatter any solver, so most plant a non-trivial one;
//! - unweighted families (every capacity 1, where all edges tie) at 10k, 100k
//!   and 1M nodes, each against the closed-form λ and against the reference: a
//!   random-weight sparse graph with the same n and m (`ref ms`, and `×ref`, our
//!   time over the reference's). `growth` is how much faster than `m log n`
//!   the time grew from the family's first row (≤ 1: within O(m log n)), and
//!   `ref gr.` the same for the reference: from 10k to 100k nodes the data
//!   leave the 2 MB L2 cache, which alone costs most graphs a factor of 1–2;
//! - λ₂, with the peak memory of the call (a counting allocator).
//!
//! Flags: `--quick` (10k rows only, fewer repetitions), `--no-peer`,
//! `--max-nodes N` (skip larger unweighted rows), and a word that selects the
//! cases whose name contains it.

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::HashMap;
use std::convert::Infallible;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ordered_float::OrderedFloat;
use petgraph::graph::UnGraph;
use ruvector_integrity::control::{Control, Limits};
use ruvector_integrity::{mincut, spectral};

/// The longest the peer may take on one case.
const PEER_BUDGET: Duration = Duration::from_secs(120);

/// The peer runs on unweighted families up to this many nodes: its
/// Stoer-Wagner is O(n·m·log n), hours at 100k.
const PEER_MAX_NODES: usize = 10_000;

/// Counts live heap bytes and their peak, for the memory column.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is passed on to the system allocator unchanged; the
// counters are atomics on the side.
unsafe impl GlobalAlloc for Counting {
    /// # Safety
    /// As `GlobalAlloc::alloc`.
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc(layout);
        if !p.is_null() {
            let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(live, Ordering::Relaxed);
        }
        p
    }
    /// # Safety
    /// As `GlobalAlloc::dealloc`.
    unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
        System.dealloc(p, layout);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
    /// # Safety
    /// As `GlobalAlloc::realloc`.
    unsafe fn realloc(&self, p: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let q = System.realloc(p, layout, new_size);
        if !q.is_null() {
            if new_size > layout.size() {
                let live = LIVE.fetch_add(new_size - layout.size(), Ordering::Relaxed) + new_size
                    - layout.size();
                PEAK.fetch_max(live, Ordering::Relaxed);
            } else {
                LIVE.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
            }
        }
        q
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Runs `f` and returns its result, its time in ms and the peak heap bytes it
/// added to what was live before.
fn measured<T>(f: impl FnOnce() -> T) -> (T, f64, usize) {
    let base = LIVE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let started = Instant::now();
    let value = f();
    let elapsed = ms(started);
    (value, elapsed, PEAK.load(Ordering::Relaxed) - base)
}

type Edges = Vec<(u32, u32, f64)>;

/// A small, fast, seeded generator (SplitMix64): the same graphs on every run.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit()
    }
    fn below(&mut self, n: usize) -> u32 {
        (self.next_u64() % n as u64) as u32
    }
    fn shuffle(&mut self, items: &mut [u32]) {
        for i in (1..items.len()).rev() {
            items.swap(i, self.below(i + 1) as usize);
        }
    }
}

/// K_n with weights uniform in [0.9, 1.1]: no edge is much heavier than another,
/// so contraction tests find little and the solver must do full scans.
fn complete(n: usize, rng: &mut Rng) -> Edges {
    let mut edges = Vec::with_capacity(n * (n - 1) / 2);
    for u in 0..n as u32 {
        for v in u + 1..n as u32 {
            edges.push((u, v, rng.range(0.9, 1.1)));
        }
    }
    edges
}

/// Two halves with edge probability 0.2 and weights in [1, 10], joined by 20
/// light edges: the minimum cut separates the halves.
fn planted(n: usize, rng: &mut Rng) -> Edges {
    let half = n as u32 / 2;
    let mut edges = Vec::new();
    for u in 0..n as u32 {
        for v in u + 1..n as u32 {
            if (u < half) == (v < half) && rng.unit() < 0.2 {
                edges.push((u, v, rng.range(1.0, 10.0)));
            }
        }
    }
    for _ in 0..20 {
        edges.push((
            rng.below(half as usize),
            half + rng.below(n - half as usize),
            rng.range(1.0, 2.0),
        ));
    }
    edges
}

/// Complete bipartite K_{a,b} with weights in [1, 10]: few shards, many
/// partitions and lists.
fn bipartite(a: usize, b: usize, rng: &mut Rng) -> Edges {
    let mut edges = Vec::with_capacity(a * b);
    for u in 0..a as u32 {
        for v in 0..b as u32 {
            edges.push((u, a as u32 + v, rng.range(1.0, 10.0)));
        }
    }
    edges
}

/// `count` cliques of `size` in a ring, each joined to the next by one edge.
fn ring_of_cliques(count: usize, size: usize, rng: &mut Rng) -> Edges {
    let mut edges = Vec::new();
    for c in 0..count as u32 {
        let base = c * size as u32;
        for u in 0..size as u32 {
            for v in u + 1..size as u32 {
                edges.push((base + u, base + v, rng.range(5.0, 10.0)));
            }
        }
        let next = ((c + 1) % count as u32) * size as u32;
        edges.push((base + size as u32 - 1, next, rng.range(1.0, 2.0)));
    }
    edges
}

/// A random spanning tree plus random edges up to `m`, weights in [1, 10].
fn sparse(n: usize, m: usize, rng: &mut Rng) -> Edges {
    let mut edges = Vec::with_capacity(m.max(n - 1));
    for v in 1..n as u32 {
        edges.push((rng.below(v as usize), v, rng.range(1.0, 10.0)));
    }
    while edges.len() < m {
        let (u, v) = (rng.below(n), rng.below(n));
        if u != v {
            edges.push((u, v, rng.range(1.0, 10.0)));
        }
    }
    edges
}

/// The seed's contracted-graph shape at about 1,000 nodes: 8 shards, 120
/// partitions placed on one or two shards, 850 IVF lists each routed to one to
/// three partitions, 4 maintenance dependencies and 2 standbys per shard.
fn contracted(rng: &mut Rng) -> (usize, Edges) {
    let (shards, partitions, lists) = (8usize, 120usize, 850usize);
    let partition = |i: usize| (shards + i) as u32;
    let list = |i: usize| (shards + partitions + i) as u32;
    let mut next = (shards + partitions + lists) as u32;
    let mut edges = Vec::new();
    for p in 0..partitions {
        let home = rng.below(shards);
        edges.push((partition(p), home, rng.range(0.8, 1.0)));
        if rng.unit() < 0.3 {
            edges.push((
                partition(p),
                (home + 1) % shards as u32,
                rng.range(0.8, 1.0),
            ));
        }
    }
    for l in 0..lists {
        for _ in 0..1 + rng.below(3) {
            edges.push((
                list(l),
                partition(rng.below(partitions) as usize),
                rng.range(0.1, 1.0),
            ));
        }
    }
    for s in 0..shards as u32 {
        for _ in 0..6 {
            edges.push((s, next, rng.range(0.9, 1.0)));
            next += 1;
        }
    }
    (next as usize, edges)
}

// The unweighted families: every capacity 1.

fn unit(pairs: impl IntoIterator<Item = (u32, u32)>) -> Edges {
    pairs.into_iter().map(|(u, v)| (u, v, 1.0)).collect()
}

fn cycle(n: usize) -> Edges {
    unit((0..n as u32).map(|v| (v, (v + 1) % n as u32)))
}

fn path(n: usize) -> Edges {
    unit((1..n as u32).map(|v| (v - 1, v)))
}

/// `rows × cols`, wrapping around in both directions when `torus`.
fn lattice(rows: usize, cols: usize, torus: bool) -> Edges {
    let (r, c) = (rows as u32, cols as u32);
    let mut pairs = Vec::new();
    for i in 0..r {
        for j in 0..c {
            let v = i * c + j;
            if j + 1 < c || torus {
                pairs.push((v, i * c + (j + 1) % c));
            }
            if i + 1 < r || torus {
                pairs.push((v, ((i + 1) % r) * c + j));
            }
        }
    }
    unit(pairs)
}

fn hypercube(dimension: u32) -> Edges {
    unit((0..1u32 << dimension).flat_map(|v| {
        (0..dimension)
            .map(move |b| (v, v ^ (1 << b)))
            .filter(|&(v, u)| v < u)
    }))
}

/// A random `degree`-regular multigraph on `n` (even) nodes: `degree / 2`
/// random Hamiltonian cycles, plus a random perfect matching if `degree` is odd.
fn regular(n: usize, degree: usize, rng: &mut Rng) -> Edges {
    let mut pairs = Vec::new();
    let mut order: Vec<u32> = (0..n as u32).collect();
    for _ in 0..degree / 2 {
        rng.shuffle(&mut order);
        pairs.extend((0..n).map(|i| (order[i], order[(i + 1) % n])));
    }
    if degree % 2 == 1 {
        rng.shuffle(&mut order);
        pairs.extend(order.chunks_exact(2).map(|p| (p[0], p[1])));
    }
    unit(pairs)
}

fn complete_unit(n: usize) -> Edges {
    unit((0..n as u32).flat_map(|u| (u + 1..n as u32).map(move |v| (u, v))))
}

/// A random recursive tree.
fn tree(n: usize, rng: &mut Rng) -> Edges {
    unit((1..n as u32).map(|v| (rng.below(v as usize), v)))
}

fn star(n: usize) -> Edges {
    unit((1..n as u32).map(|v| (0, v)))
}

/// Cliques of 50 at both ends of a path through the remaining nodes.
fn barbell(n: usize) -> Edges {
    let k = 50u32;
    let n = n as u32;
    let mut pairs: Vec<(u32, u32)> = Vec::new();
    for base in [0, n - k] {
        for u in 0..k {
            for v in u + 1..k {
                pairs.push((base + u, base + v));
            }
        }
    }
    pairs.extend((k..=n - k).map(|v| (v - 1, v)));
    unit(pairs)
}

/// A ring of K₄s joined by single edges: λ = 2, and any two of the ring's edges
/// form a minimum cut (Θ(n²) of them).
fn necklace(n: usize) -> Edges {
    let count = (n / 4) as u32;
    let mut pairs = Vec::new();
    for c in 0..count {
        let base = 4 * c;
        for u in 0..4 {
            for v in u + 1..4 {
                pairs.push((base + u, base + v));
            }
        }
        pairs.push((base + 3, 4 * ((c + 1) % count)));
    }
    unit(pairs)
}

/// The square of a cycle (each node joined to the two nearest on each side):
/// 4-regular, λ = 4, and every flow path between neighbours is long.
fn cycle_squared(n: usize) -> Edges {
    unit((0..n as u32).flat_map(|v| [(v, (v + 1) % n as u32), (v, (v + 2) % n as u32)]))
}

/// Largest integer whose square is at most `n`.
fn side(n: usize) -> usize {
    (n as f64).sqrt() as usize
}

/// An unweighted family at about `n` nodes: `(n, edges, closed-form λ)`.
fn family(name: &str, n: usize, rng: &mut Rng) -> (usize, Edges, Option<f64>) {
    match name {
        "cycle" => (n, cycle(n), Some(2.0)),
        "path" => (n, path(n), Some(1.0)),
        "grid" => {
            let s = side(n);
            (s * s, lattice(s, s, false), Some(2.0))
        }
        "torus" => {
            let s = side(n);
            (s * s, lattice(s, s, true), Some(4.0))
        }
        "hypercube" => {
            let d = (n as f64).log2().round() as u32;
            (1 << d, hypercube(d), Some(d as f64))
        }
        "regular-3" => (n, regular(n, 3, rng), None),
        "regular-8" => (n, regular(n, 8, rng), None),
        "complete" => (n, complete_unit(n), Some(n as f64 - 1.0)),
        "tree" => (n, tree(n, rng), Some(1.0)),
        "star" => (n, star(n), Some(1.0)),
        "barbell" => (n, barbell(n), Some(1.0)),
        "necklace" => {
            let n = n / 4 * 4;
            (n, necklace(n), Some(2.0))
        }
        "cycle-squared" => (n, cycle_squared(n), Some(4.0)),
        other => panic!("unknown family {other}"),
    }
}

/// Families and the sizes they run at (the full tier; `--quick` keeps 10k).
/// Complete graphs are dense: 2,000 nodes are already 2 M edges.
const UNWEIGHTED: &[(&str, &[usize])] = &[
    ("cycle", &[10_000, 100_000, 1_000_000]),
    ("path", &[10_000, 100_000, 1_000_000]),
    ("grid", &[10_000, 100_000, 1_000_000]),
    ("torus", &[10_000, 100_000, 1_000_000]),
    ("hypercube", &[8_192, 131_072, 1_048_576]),
    ("regular-3", &[10_000, 100_000, 1_000_000]),
    ("regular-8", &[10_000, 100_000, 1_000_000]),
    ("tree", &[10_000, 100_000, 1_000_000]),
    ("star", &[10_000, 100_000, 1_000_000]),
    ("barbell", &[10_000, 100_000, 1_000_000]),
    ("necklace", &[10_000, 100_000, 1_000_000]),
    ("cycle-squared", &[10_000, 100_000, 1_000_000]),
    ("complete", &[500, 1_000, 2_000]),
];

/// The graph of a named case: `(n, edges)`. Unweighted cases are
/// `unit-FAMILY-N`, their references `ref-FAMILY-N`.
fn build(case: &str) -> (usize, Edges) {
    let mut rng = Rng(0x5EED_0000 + case.len() as u64);
    if let Some(rest) = case
        .strip_prefix("unit-")
        .or_else(|| case.strip_prefix("ref-"))
    {
        let (name, n) = rest.rsplit_once('-').expect("FAMILY-N");
        let (n, edges, _) = family(name, n.parse().expect("a size"), &mut rng);
        if case.starts_with("ref-") {
            let mut rng = Rng(0x5EED_1111 + n as u64);
            return (n, sparse(n, edges.len(), &mut rng));
        }
        return (n, edges);
    }
    match case {
        "complete-1000" => (1000, complete(1000, &mut rng)),
        "planted-1000" => (1000, planted(1000, &mut rng)),
        "bipartite-100x900" => (1000, bipartite(100, 900, &mut rng)),
        "ring-of-cliques-100x10" => (1000, ring_of_cliques(100, 10, &mut rng)),
        "sparse-10000" => (10_000, sparse(10_000, 50_000, &mut rng)),
        "sparse-100000" => (100_000, sparse(100_000, 500_000, &mut rng)),
        "sparse-1000000" => (1_000_000, sparse(1_000_000, 5_000_000, &mut rng)),
        "contracted-1000" | "lambda2-contracted-1000" => contracted(&mut rng),
        "lambda2-sparse-1000" => (1000, sparse(1000, 5000, &mut rng)),
        "lambda2-sparse-100000" => (100_000, sparse(100_000, 500_000, &mut rng)),
        "lambda2-grid-100x100" => (10_000, lattice(100, 100, false)),
        "lambda2-grid-316x316" => (316 * 316, lattice(316, 316, false)),
        "lambda2-path-10000" => (10_000, path(10_000)),
        "lambda2-cycle-10000" => (10_000, cycle(10_000)),
        "lambda2-cycle-100000" => (100_000, cycle(100_000)),
        "lambda2-torus-100x100" => (10_000, lattice(100, 100, true)),
        "lambda2-hypercube-2^13" => (8192, hypercube(13)),
        other => panic!("unknown case {other}"),
    }
}

const MINCUT_CASES: &[&str] = &[
    "complete-1000",
    "planted-1000",
    "bipartite-100x900",
    "ring-of-cliques-100x10",
    "sparse-10000",
    "sparse-100000",
    "sparse-1000000",
    "contracted-1000",
];

/// λ₂ cases and their reference: the closed form where there is one, else the
/// dense eigensolver up to 2,000 nodes.
const LAMBDA2_CASES: &[(&str, Option<f64>)] = &[
    ("lambda2-contracted-1000", None),
    ("lambda2-sparse-1000", None),
    ("lambda2-sparse-100000", None),
    ("lambda2-grid-100x100", Some(100.0)),
    ("lambda2-grid-316x316", Some(316.0)),
    ("lambda2-path-10000", Some(10_000.0)),
    ("lambda2-cycle-10000", Some(5_000.0)),
    ("lambda2-cycle-100000", Some(50_000.0)),
    ("lambda2-torus-100x100", Some(50.0)),
    ("lambda2-hypercube-2^13", Some(-1.0)),
];

/// The closed form of λ₂ from its table entry: `2 − 2cos(π/s)` for paths and
/// grids of side s (and cycles and tori of side 2s), 2 for hypercubes. It is
/// computed as `4 sin²(π/2s)`: the cosine form cancels to a few digits.
fn closed_form(s: f64) -> f64 {
    if s < 0.0 {
        2.0
    } else {
        (2.0 * (std::f64::consts::PI / (2.0 * s)).sin()).powi(2)
    }
}

fn median(times: &mut [f64]) -> f64 {
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1e3
}

/// Child mode: build the case, convert it for petgraph, then time rustworkx-core.
fn run_peer(case: &str) {
    let (n, edges) = build(case);
    let mut graph = UnGraph::<(), f64>::with_capacity(n, edges.len());
    let nodes: Vec<_> = (0..n).map(|_| graph.add_node(())).collect();
    for &(u, v, w) in &edges {
        graph.add_edge(nodes[u as usize], nodes[v as usize], w);
    }
    println!("ready");
    std::io::stdout().flush().unwrap();
    let started = Instant::now();
    let cut = rustworkx_core::connectivity::stoer_wagner_min_cut(&graph, |e| {
        Ok::<_, Infallible>(OrderedFloat(*e.weight()))
    })
    .unwrap()
    .expect("n ≥ 2");
    println!("{} {}", cut.0 .0, ms(started));
}

/// Runs the peer on `case`; `None` when it exceeds the budget.
fn time_peer(case: &str) -> Option<(f64, f64)> {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--peer", case])
        .stdout(Stdio::piped())
        .spawn()
        .expect("the bench binary can run itself");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let outcome = rx
        .recv_timeout(Duration::from_secs(600))
        .ok()
        .filter(|line| line == "ready")
        .and_then(|_| rx.recv_timeout(PEER_BUDGET).ok())
        .map(|line| {
            let mut parts = line.split_whitespace().map(|p| p.parse::<f64>().unwrap());
            (parts.next().unwrap(), parts.next().unwrap())
        });
    let _ = child.kill();
    let _ = child.wait();
    outcome
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1e-300)
}

fn json_number(x: Option<f64>) -> String {
    x.map_or("null".to_owned(), |x| format!("{x:.3}"))
}

fn mb(bytes: usize) -> f64 {
    bytes as f64 / 1e6
}

/// Our min cut on a case: `(λ, median ms, peak bytes)`, over `runs` runs. The
/// 1M-node rows go past the default limit of 10 M edges, so it is raised here.
fn time_ours(case: &str, n: usize, edges: &Edges, runs: usize) -> (f64, f64, usize) {
    let mut times = Vec::new();
    let mut value = 0.0;
    let mut peak = 0;
    let limits = Limits {
        max_edges: 100_000_000,
    };
    for _ in 0..runs {
        let (cut, t, bytes) = measured(|| {
            mincut::min_cut_with(n, edges, &mut Control::new(limits))
                .unwrap()
                .unwrap()
        });
        times.push(t);
        peak = peak.max(bytes);
        value = cut.value;
        assert!(
            close(mincut::cut_weight(edges, &cut.side), value),
            "{case}: our side does not weigh λ"
        );
    }
    (value, median(&mut times), peak)
}

/// How many runs a case gets: fewer as it gets slower.
fn runs_for(first_ms: f64, quick: bool) -> usize {
    match first_ms {
        t if t < 200.0 && !quick => 5,
        t if t < 2_000.0 => 3,
        _ => 1,
    }
}

struct Options {
    quick: bool,
    peer: bool,
    max_nodes: usize,
    only: Option<String>,
}

impl Options {
    fn selects(&self, case: &str) -> bool {
        self.only.as_ref().is_none_or(|o| case.contains(o.as_str()))
    }
}

fn weighted_table(options: &Options, out: &mut std::fs::File) {
    println!(
        "{:<26} {:>9} {:>9} {:>11} {:>13} {:>9}  same λ",
        "case", "n", "m", "ours ms", "peer ms", "ratio"
    );
    for &case in MINCUT_CASES.iter().filter(|c| options.selects(c)) {
        if options.quick && case == "sparse-1000000" {
            continue;
        }
        let (n, edges) = build(case);
        let mut ours = Vec::new();
        let mut peer = Vec::new();
        let mut value = 0.0;
        let mut peer_value = None;
        let mut peer_alive = options.peer;
        let rounds = if options.quick { 3 } else { 5 };
        for round in 0..rounds {
            let (v, t, _) = time_ours(case, n, &edges, 1);
            ours.push(t);
            value = v;
            // The peer gets five runs when it is quick, three under 10 s, else one.
            let peer_runs = match peer.last() {
                None => 1,
                Some(&t) if t < 2_000.0 => rounds,
                Some(&t) if t < 10_000.0 => 3,
                Some(_) => 1,
            };
            if peer_alive && round < peer_runs {
                match time_peer(case) {
                    Some((v, t)) => {
                        peer_value = Some(v);
                        peer.push(t);
                    }
                    None => peer_alive = false,
                }
            }
        }
        let ours_ms = median(&mut ours);
        let peer_ms = (!peer.is_empty()).then(|| median(&mut peer));
        let same = peer_value.map(|p| close(p, value));
        let ratio = peer_ms.map(|p| p / ours_ms);
        println!(
            "{:<26} {:>9} {:>9} {:>11.3} {:>13} {:>9}  {}",
            case,
            n,
            edges.len(),
            ours_ms,
            peer_cell(options.peer, peer_ms),
            ratio.map_or("-".to_owned(), |r| format!("{r:.0}x")),
            same.map_or("-".to_owned(), |s| s.to_string()),
        );
        writeln!(
            out,
            r#"{{"case":"{case}","n":{n},"m":{},"lambda":{value},"ours_ms":{ours_ms:.3},"peer":"rustworkx-core","peer_ms":{},"ratio":{},"same_value":{}}}"#,
            edges.len(),
            json_number(peer_ms),
            json_number(ratio),
            same.map_or("null".to_owned(), |s| s.to_string()),
        )
        .unwrap();
    }
}

fn peer_cell(ran: bool, peer_ms: Option<f64>) -> String {
    match (ran, peer_ms) {
        (_, Some(p)) => format!("{p:.1}"),
        (true, None) => "> 120 s".to_owned(),
        (false, None) => "-".to_owned(),
    }
}

fn unweighted_table(options: &Options, out: &mut std::fs::File) {
    println!(
        "\n{:<26} {:>8} {:>9} {:>5} {:>10} {:>8} {:>9} {:>6} {:>7} {:>7} {:>10} {:>7}  same λ",
        "unweighted case",
        "n",
        "m",
        "λ",
        "ours ms",
        "peak MB",
        "ref ms",
        "×ref",
        "growth",
        "ref gr.",
        "peer ms",
        "ratio"
    );
    for &(name, sizes) in UNWEIGHTED {
        // (n, m, ms, ref ms) of the family's first row, for the growth columns.
        let mut first: Option<(usize, usize, f64, f64)> = None;
        for &size in sizes
            .iter()
            .take(if options.quick { 1 } else { sizes.len() })
            .filter(|&&size| size <= options.max_nodes)
        {
            let case = format!("unit-{name}-{size}");
            if !options.selects(&case) {
                continue;
            }
            let (n, edges, expected) =
                family(name, size, &mut Rng(0x5EED_0000 + case.len() as u64));
            let m = edges.len();
            let (_, probe, _) = time_ours(&case, n, &edges, 1);
            let (value, ours_ms, peak) =
                time_ours(&case, n, &edges, runs_for(probe, options.quick));
            let closed = expected.map(|x| x == value);
            let reference = format!("ref-{name}-{size}");
            let (rn, ref_edges) = build(&reference);
            let (_, probe, _) = time_ours(&reference, rn, &ref_edges, 1);
            let (_, ref_ms, _) =
                time_ours(&reference, rn, &ref_edges, runs_for(probe, options.quick));
            drop(ref_edges);
            let growths = first.map(|(n0, m0, t0, r0)| {
                let model = (m as f64 * (n as f64).ln()) / (m0 as f64 * (n0 as f64).ln());
                ((ours_ms / t0) / model, (ref_ms / r0) / model)
            });
            let growth = growths.map(|g| g.0);
            if first.is_none() {
                first = Some((n, m, ours_ms, ref_ms));
            }
            let peer = (options.peer && n <= PEER_MAX_NODES).then(|| time_peer(&case));
            let (peer_value, peer_ms) = match peer {
                Some(Some((v, t))) => (Some(v), Some(t)),
                _ => (None, None),
            };
            let same = peer_value.map(|p| p == value);
            let ratio = peer_ms.map(|p| p / ours_ms);
            println!(
                "{:<26} {:>8} {:>9} {:>5} {:>10.3} {:>8.1} {:>9.3} {:>6.2} {:>7} {:>7} {:>10} {:>7}  {}{}",
                case,
                n,
                m,
                value,
                ours_ms,
                mb(peak),
                ref_ms,
                ours_ms / ref_ms,
                growth.map_or("-".to_owned(), |g| format!("{g:.2}")),
                growths.map_or("-".to_owned(), |g| format!("{:.2}", g.1)),
                peer_cell(peer.is_some(), peer_ms),
                ratio.map_or("-".to_owned(), |r| format!("{r:.0}x")),
                same.map_or("-".to_owned(), |s| s.to_string()),
                match closed {
                    Some(false) => "  λ IS NOT THE CLOSED FORM",
                    _ => "",
                },
            );
            writeln!(
                out,
                r#"{{"case":"{case}","n":{n},"m":{m},"lambda":{value},"closed_form":{},"ours_ms":{ours_ms:.3},"peak_bytes":{peak},"reference":"random weights, same n and m","ref_ms":{ref_ms:.3},"growth_over_m_log_n":{},"ref_growth_over_m_log_n":{},"peer":"rustworkx-core","peer_ms":{},"ratio":{},"same_value":{}}}"#,
                expected.map_or("null".to_owned(), |x| x.to_string()),
                json_number(growth),
                json_number(growths.map(|g| g.1)),
                json_number(peer_ms),
                json_number(ratio),
                same.map_or("null".to_owned(), |s| s.to_string()),
            )
            .unwrap();
        }
    }
}

fn lambda2_table(options: &Options, out: &mut std::fs::File) {
    println!(
        "\n{:<26} {:>9} {:>9} {:>11} {:>9} {:>11} {:>9}  rel err (reference)",
        "λ₂ case", "n", "m", "ours ms", "peak MB", "dense ms", "ratio"
    );
    for &(case, form) in LAMBDA2_CASES.iter().filter(|(c, _)| options.selects(c)) {
        let (n, edges) = build(case);
        if options.quick && n > 20_000 {
            continue;
        }
        let mut ours = Vec::new();
        let mut value = 0.0;
        let mut peak = 0;
        for _ in 0..if options.quick { 1 } else { 3 } {
            let (v, t, bytes) = measured(|| spectral::lambda2(n, &edges).unwrap());
            value = v;
            ours.push(t);
            peak = peak.max(bytes);
        }
        let ours_ms = median(&mut ours);
        let (reference, peer, peer_ms) = match form {
            Some(s) => (Some(closed_form(s)), "closed form", None),
            None if n <= 2_000 => {
                let mut times = Vec::new();
                let mut dense = 0.0;
                for _ in 0..3 {
                    let started = Instant::now();
                    dense = spectral::dense_lambda2(n, &edges).unwrap();
                    times.push(ms(started));
                }
                (Some(dense), "faer dense", Some(median(&mut times)))
            }
            None => (None, "none", None),
        };
        let rel_err = reference.map(|r| (value - r).abs() / r);
        let ratio = peer_ms.map(|p| p / ours_ms);
        println!(
            "{:<26} {:>9} {:>9} {:>11.3} {:>9.1} {:>11} {:>9}  {} ({peer})",
            case,
            n,
            edges.len(),
            ours_ms,
            mb(peak),
            peer_ms.map_or("-".to_owned(), |p| format!("{p:.1}")),
            ratio.map_or("-".to_owned(), |r| format!("{r:.0}x")),
            rel_err.map_or("-".to_owned(), |e| format!("{e:.1e}")),
        );
        writeln!(
            out,
            r#"{{"case":"{case}","n":{n},"m":{},"lambda2":{value:e},"ours_ms":{ours_ms:.3},"peak_bytes":{peak},"peer":"{peer}","peer_ms":{},"ratio":{},"rel_err":{}}}"#,
            edges.len(),
            json_number(peer_ms),
            json_number(ratio),
            rel_err.map_or("null".to_owned(), |e| format!("{e:e}")),
        )
        .unwrap();
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(at) = args.iter().position(|a| a == "--peer") {
        run_peer(&args[at + 1]);
        return;
    }
    let flags: HashMap<&str, bool> = ["--quick", "--no-peer"]
        .into_iter()
        .map(|f| (f, args.iter().any(|a| a == f)))
        .collect();
    let max_nodes = args
        .iter()
        .position(|a| a == "--max-nodes")
        .map(|at| args[at + 1].parse().expect("--max-nodes N"));
    let options = Options {
        quick: flags["--quick"],
        peer: !flags["--no-peer"],
        max_nodes: max_nodes.unwrap_or(usize::MAX),
        // `cargo bench` passes `--bench`; other words select cases.
        only: args
            .iter()
            .enumerate()
            .skip(1)
            .find(|&(i, a)| !a.starts_with("--") && args[i - 1] != "--max-nodes")
            .map(|(_, a)| a.clone()),
    };
    let target = std::env::var("CARGO_TARGET_DIR")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../../target").to_owned());
    std::fs::create_dir_all(format!("{target}/bench")).unwrap();
    let path = format!("{target}/bench/mincut.jsonl");
    let mut out = std::fs::File::create(&path).unwrap();
    weighted_table(&options, &mut out);
    unweighted_table(&options, &mut out);
    lambda2_table(&options, &mut out);
    println!("\nwrote {path}");
}
