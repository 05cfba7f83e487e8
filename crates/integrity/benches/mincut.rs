//! `make bench`: our exact minimum cut against rustworkx-core's Stoer-Wagner, and
//! our λ₂ against a dense eigensolver, on the same graphs in the same run.
//!
//! Each graph is generated once from a fixed seed, outside any timer. The peer
//! runs in a child process (this binary with `--peer CASE`), which builds its own
//! copy of the graph and its petgraph form before its timer starts; the parent
//! kills it after [`PEER_BUDGET`] and records null. Ours and the peer alternate,
//! and medians are reported. Results go to stdout as a table and to
//! `target/bench/mincut.jsonl`, one JSON object per case.
//!
//! Random graphs almost always have a trivial minimum cut (the lightest vertex)
//! and flatter any solver, so most families plant a non-trivial one.

use std::convert::Infallible;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ordered_float::OrderedFloat;
use petgraph::graph::UnGraph;
use ruvector_integrity::{mincut, spectral};

/// The longest the peer may take on one case.
const PEER_BUDGET: Duration = Duration::from_secs(120);

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

/// A random spanning tree plus random edges, m ≈ 5n, weights in [1, 10].
fn sparse(n: usize, rng: &mut Rng) -> Edges {
    let mut edges = Vec::with_capacity(5 * n);
    for v in 1..n as u32 {
        edges.push((rng.below(v as usize), v, rng.range(1.0, 10.0)));
    }
    while edges.len() < 5 * n {
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

fn grid(side: usize) -> Edges {
    let mut edges = Vec::new();
    for r in 0..side as u32 {
        for c in 0..side as u32 {
            let v = r * side as u32 + c;
            if c + 1 < side as u32 {
                edges.push((v, v + 1, 1.0));
            }
            if r + 1 < side as u32 {
                edges.push((v, v + side as u32, 1.0));
            }
        }
    }
    edges
}

/// The graph of a case, by name: `(n, edges)`.
fn build(case: &str) -> (usize, Edges) {
    let mut rng = Rng(0x5EED_0000 + case.len() as u64);
    match case {
        "complete-1000" => (1000, complete(1000, &mut rng)),
        "planted-1000" => (1000, planted(1000, &mut rng)),
        "bipartite-100x900" => (1000, bipartite(100, 900, &mut rng)),
        "ring-of-cliques-100x10" => (1000, ring_of_cliques(100, 10, &mut rng)),
        "sparse-10000" => (10_000, sparse(10_000, &mut rng)),
        "sparse-100000" => (100_000, sparse(100_000, &mut rng)),
        "sparse-1000000" => (1_000_000, sparse(1_000_000, &mut rng)),
        "contracted-1000" | "lambda2-contracted-1000" => contracted(&mut rng),
        "lambda2-sparse-1000" => (1000, sparse(1000, &mut rng)),
        "lambda2-grid-100x100" => (10_000, grid(100)),
        "lambda2-sparse-100000" => (100_000, sparse(100_000, &mut rng)),
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

const LAMBDA2_CASES: &[&str] = &[
    "lambda2-contracted-1000",
    "lambda2-sparse-1000",
    "lambda2-grid-100x100",
    "lambda2-sparse-100000",
];

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

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(at) = args.iter().position(|a| a == "--peer") {
        run_peer(&args[at + 1]);
        return;
    }
    let only: Option<&String> = args.iter().skip(1).find(|a| !a.starts_with("--"));
    let target = std::env::var("CARGO_TARGET_DIR")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../../target").to_owned());
    std::fs::create_dir_all(format!("{target}/bench")).unwrap();
    let path = format!("{target}/bench/mincut.jsonl");
    let mut out = std::fs::File::create(&path).unwrap();

    println!(
        "{:<26} {:>9} {:>9} {:>11} {:>13} {:>9}  same λ",
        "case", "n", "m", "ours ms", "peer ms", "ratio"
    );
    for &case in MINCUT_CASES
        .iter()
        .filter(|c| only.is_none_or(|o| c.contains(o.as_str())))
    {
        let (n, edges) = build(case);
        let mut ours = Vec::new();
        let mut peer = Vec::new();
        let mut value = 0.0;
        let mut peer_value = None;
        let mut peer_alive = true;
        for round in 0..5 {
            let started = Instant::now();
            let cut = mincut::min_cut(n, &edges).unwrap().unwrap();
            ours.push(ms(started));
            value = cut.value;
            assert!(
                close(mincut::cut_weight(&edges, &cut.side), value),
                "{case}: our side does not weigh λ"
            );
            // The peer gets five runs when it is quick, three under 10 s, else one.
            let peer_runs = match peer.last() {
                None => 1,
                Some(&t) if t < 2_000.0 => 5,
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
            peer_ms.map_or("> 120 s".to_owned(), |p| format!("{p:.1}")),
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

    println!(
        "\n{:<26} {:>9} {:>9} {:>11} {:>13} {:>9}  rel err (reference)",
        "case", "n", "m", "ours ms", "dense ms", "ratio"
    );
    for &case in LAMBDA2_CASES
        .iter()
        .filter(|c| only.is_none_or(|o| c.contains(o.as_str())))
    {
        let (n, edges) = build(case);
        let mut ours = Vec::new();
        let mut value = 0.0;
        for _ in 0..5 {
            let started = Instant::now();
            value = spectral::lambda2(n, &edges).unwrap();
            ours.push(ms(started));
        }
        let ours_ms = median(&mut ours);
        // The reference: the dense eigensolver where n allows, the closed form on the grid.
        let (reference, peer, peer_ms) = if case.contains("grid") {
            let side = 100.0f64;
            (
                Some(2.0 - 2.0 * (std::f64::consts::PI / side).cos()),
                "closed form",
                None,
            )
        } else if n <= 2_000 {
            let mut times = Vec::new();
            let mut dense = 0.0;
            for _ in 0..3 {
                let started = Instant::now();
                dense = spectral::dense_lambda2(n, &edges);
                times.push(ms(started));
            }
            (Some(dense), "faer dense", Some(median(&mut times)))
        } else {
            (None, "none", None)
        };
        let rel_err = reference.map(|r| (value - r).abs() / r);
        let ratio = peer_ms.map(|p| p / ours_ms);
        println!(
            "{:<26} {:>9} {:>9} {:>11.3} {:>13} {:>9}  {} ({peer})",
            case,
            n,
            edges.len(),
            ours_ms,
            peer_ms.map_or("-".to_owned(), |p| format!("{p:.1}")),
            ratio.map_or("-".to_owned(), |r| format!("{r:.0}x")),
            rel_err.map_or("-".to_owned(), |e| format!("{e:.1e}")),
        );
        writeln!(
            out,
            r#"{{"case":"{case}","n":{n},"m":{},"lambda2":{value:e},"ours_ms":{ours_ms:.3},"peer":"{peer}","peer_ms":{},"ratio":{},"rel_err":{}}}"#,
            edges.len(),
            json_number(peer_ms),
            json_number(ratio),
            rel_err.map_or("null".to_owned(), |e| format!("{e:e}")),
        )
        .unwrap();
    }
    println!("\nwrote {path}");
}
