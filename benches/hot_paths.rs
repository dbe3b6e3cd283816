//! Times the Rust hot paths without Python on seeded data of the benchmark's two shapes:
//! `cargo bench --bench hot_paths [-- N QUERIES]`.
//!
//! A plain harness (no criterion): the numbers that matter are the Python-level ones of
//! `kato-gpu bench`, which compares against RapidFuzz and difflib in the same run; this one is for
//! iterating on the Rust core (median of QUERIES queries per row).
use std::time::Instant;

use kato_gpu::{Matcher, Metric};

/// SplitMix64.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Draws from Zipf weights `1/(rank+1)^exponent` by inverse CDF.
struct Zipf(Vec<f64>);

impl Zipf {
    fn new(n: usize, exponent: f64) -> Zipf {
        let mut cdf = Vec::with_capacity(n);
        let mut total = 0.0;
        for r in 0..n {
            total += 1.0 / ((r + 1) as f64).powf(exponent);
            cdf.push(total);
        }
        Zipf(cdf.into_iter().map(|c| c / total).collect())
    }
    fn draw(&self, rng: &mut Rng) -> u32 {
        let u = rng.unit();
        self.0.partition_point(|&c| c < u).min(self.0.len() - 1) as u32
    }
}

struct Workload {
    tokens: Vec<u32>,
    offsets: Vec<u64>,
    queries: Vec<Vec<u32>>,
}

/// KATO's benchmark shape: 2-5 events of 3-15 distinct sorted tokens from 200 Zipf(0.8) symbols;
/// a query keeps 30-70% of a source pattern's tokens per event plus 0-3 noise tokens.
fn kato_shape(n: usize, queries: usize, rng: &mut Rng) -> Workload {
    let zipf = Zipf::new(200, 0.8);
    let mut events_of = Vec::with_capacity(n);
    let (mut tokens, mut offsets) = (Vec::new(), vec![0u64]);
    for _ in 0..n {
        let mut events = Vec::new();
        for _ in 0..2 + rng.below(4) {
            let size = 3 + rng.below(13);
            let mut event: Vec<u32> = Vec::new();
            while event.len() < size {
                let s = zipf.draw(rng);
                if !event.contains(&s) {
                    event.push(s);
                }
            }
            event.sort_unstable();
            tokens.extend_from_slice(&event);
            events.push(event);
        }
        offsets.push(tokens.len() as u64);
        events_of.push(events);
    }
    let queries = (0..queries)
        .map(|_| {
            let events = &events_of[rng.below(n)];
            let keep = 0.3 + 0.4 * rng.unit();
            let mut state = Vec::new();
            for event in &events[..1 + rng.below(events.len())] {
                let mut kept: Vec<u32> = event.iter().copied().filter(|_| rng.unit() < keep).collect();
                for _ in 0..rng.below(4) {
                    let s = zipf.draw(rng);
                    if !kept.contains(&s) {
                        kept.push(s);
                    }
                }
                kept.sort_unstable();
                state.extend(kept);
            }
            state
        })
        .collect();
    Workload { tokens, offsets, queries }
}

/// 5-symbol chunks from a 50,000-symbol Zipf(1.0) vocabulary; a query replaces 1-3 positions.
fn chunk_shape(n: usize, queries: usize, rng: &mut Rng) -> Workload {
    let zipf = Zipf::new(50_000, 1.0);
    let tokens: Vec<u32> = (0..n * 5).map(|_| zipf.draw(rng)).collect();
    let offsets = (0..=n as u64).map(|i| i * 5).collect();
    let queries = (0..queries)
        .map(|_| {
            let src = rng.below(n) * 5;
            let mut state = tokens[src..src + 5].to_vec();
            for _ in 0..1 + rng.below(3) {
                let at = rng.below(5);
                state[at] = zipf.draw(rng);
            }
            state
        })
        .collect();
    Workload { tokens, offsets, queries }
}

/// CPU time of every thread of this process so far, in seconds (Linux; 0 elsewhere): on a
/// shared machine the wall clock counts other processes' time slices, this does not.
fn cpu_seconds() -> f64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return 0.0 };
    let ns: u64 = tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    ns as f64 * 1e-9
}

/// (median, fastest) in ms: the fastest shows the cost with the least interference.
fn median_min_ms(mut times: Vec<f64>) -> (f64, f64) {
    times.sort_by(f64::total_cmp);
    (times[times.len() / 2] * 1e3, times[0] * 1e3)
}

fn main() {
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    // A word argument keeps only the rows whose "shape metric" contains it, e.g. `kato lcs`.
    let only: Vec<String> =
        std::env::args().skip(1).filter(|a| a.parse::<usize>().is_err() && a != "--bench").collect();
    let n = args.first().copied().unwrap_or(1_000_000);
    let queries = args.get(1).copied().unwrap_or(10);
    let names: Vec<String> =
        (0..n).map(|i| format!("PTRN|{:040x}", (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15))).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut rng = Rng(42);
    for (shape, workload) in [("kato", kato_shape(n, queries, &mut rng)), ("chunks", chunk_shape(n, queries, &mut rng))]
    {
        for metric in [Metric::Lcs, Metric::Difflib { autojunk: false }] {
            if (shape == "chunks" && metric != Metric::Lcs) || !only.iter().all(|w| shape == w || metric.name() == w) {
                continue;
            }
            let mut matcher = Matcher::new(metric);
            matcher.insert_batch(&names, &workload.tokens, &workload.offsets).unwrap();
            matcher.promote();
            let rows = if std::env::var_os("HOT_PATHS_ONLY_SCAN").is_some() {
                vec![(std::env::var("HOT_PATHS_THRESHOLD").ok().and_then(|t| t.parse().ok()).unwrap_or(0.5), None)]
            } else {
                vec![(0.1, None), (0.1, Some(100)), (0.5, None)]
            };
            for (threshold, limit) in rows {
                let (mut times, mut cpu) = (Vec::new(), Vec::new());
                let mut found = 0;
                matcher.query(&workload.queries[0], threshold, limit).unwrap();
                for state in &workload.queries {
                    let (started, cpu_started) = (Instant::now(), cpu_seconds());
                    found += matcher.query(state, threshold, limit).unwrap().len();
                    times.push(started.elapsed().as_secs_f64());
                    cpu.push(cpu_seconds() - cpu_started);
                }
                let (median, fastest) = median_min_ms(times);
                let (cpu, _) = median_min_ms(cpu);
                println!(
                    "{shape:6} {:8} n={n} threshold={threshold} limit={:5}: median {median:7.2} ms, min {fastest:7.2} ms, CPU {cpu:7.2} ms, {} matches/query",
                    metric.name(),
                    limit.map_or("all".to_string(), |k| k.to_string()),
                    found / queries
                );
            }
        }
    }
}
