//! Times `prediction_parts_many` without Python: `cargo run --release --example prediction_timing`.
use std::time::Instant;

fn main() {
    let mut seed = 7u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let patterns: Vec<Vec<u32>> = (0..67_000).map(|_| (0..31).map(|_| (next() % 200) as u32).collect()).collect();
    let state: Vec<u32> = (0..13).map(|_| (next() % 200) as u32).collect();
    for _ in 0..3 {
        let t = Instant::now();
        let parts = kato_gpu::prediction_parts_many(&patterns, &state, true);
        println!("{} parts in {:.1} ms", parts.len(), t.elapsed().as_secs_f64() * 1e3);
    }
}
