//! Times one query over synthetic patterns without Python: `cargo run --release --example scan_timing`.
use kato_gpu::{Matcher, Metric};
use std::time::Instant;

fn main() {
    let n = 1_000_000usize;
    let mut seed = 1u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut tokens = Vec::new();
    let mut offsets = vec![0u64];
    for _ in 0..n {
        let len = 6 + (next() % 52) as usize;
        for _ in 0..len {
            tokens.push(((next() % 200) * (next() % 200) / 200) as u32);
        }
        offsets.push(tokens.len() as u64);
    }
    let names: Vec<String> = (0..n).map(|i| format!("PTRN|{i:040x}")).collect();
    let name_refs: Vec<&str> = names.iter().map(|s| s.as_str()).collect();
    for metric in [Metric::Lcs, Metric::Difflib { autojunk: false }] {
        let mut m = Matcher::new(metric);
        m.insert_batch(&name_refs, &tokens, &offsets).unwrap();
        m.promote();
        let state: Vec<u32> = (0..20).map(|_| ((next() % 200) * (next() % 200) / 200) as u32).collect();
        for (threshold, limit) in [(0.95, Some(100)), (0.5, Some(100)), (0.1, Some(100)), (0.1, None)] {
            let t = Instant::now();
            let hits = m.query(&state, threshold, limit).unwrap();
            println!(
                "{metric:?} threshold {threshold} limit {limit:?}: {} hits, {:.1} ms",
                hits.len(),
                t.elapsed().as_secs_f64() * 1e3
            );
        }
    }
}
