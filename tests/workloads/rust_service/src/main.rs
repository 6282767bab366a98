//! A service's memory life in miniature, named so a report can be checked against it.
//!
//! Usage: rust_service BASE_MIB SPIKE_MIB SPIKE_MS BEFORE_MS AFTER_MS
//!
//! At startup `load_catalog` collects BASE_MIB of rows from iterators (the pages are touched
//! inside `alloc`'s `from_iter`, as `collect` does); after BEFORE_MS, `serve_burst` calls
//! `build_burst_index`, which fills SPIKE_MIB through `Vec::resize` (glibc's memset touches
//! the pages), holds it SPIKE_MS and drops it; the process exits AFTER_MS later.

use std::hint::black_box;
use std::thread::sleep;
use std::time::Duration;

/// u64s in a 1 MiB row.
const ROW: usize = (1 << 20) / 8;

#[inline(never)]
fn load_catalog(mib: usize) -> Vec<Vec<u64>> {
    (0..mib)
        .map(|row| (0..ROW).map(|i| black_box(i as u64 ^ row as u64)).collect())
        .collect()
}

#[inline(never)]
fn build_burst_index(mib: usize) -> Vec<u8> {
    let mut index = Vec::new();
    index.resize(mib << 20, black_box(7u8));
    index
}

#[inline(never)]
fn serve_burst(mib: usize, hold_ms: u64) -> u8 {
    let index = build_burst_index(mib);
    sleep(Duration::from_millis(hold_ms));
    black_box(&index)[index.len() / 2]
}

fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .map(|arg| arg.parse().unwrap_or(u64::MAX))
        .collect();
    let [base, spike, spike_ms, before_ms, after_ms] = args[..] else {
        eprintln!("usage: rust_service BASE_MIB SPIKE_MIB SPIKE_MS BEFORE_MS AFTER_MS");
        std::process::exit(2);
    };
    if base > 4096 || spike > 4096 {
        eprintln!("sizes are in MiB, at most 4096");
        std::process::exit(2);
    }
    let catalog = load_catalog(base as usize);
    sleep(Duration::from_millis(before_ms));
    let byte = serve_burst(spike as usize, spike_ms);
    sleep(Duration::from_millis(after_ms));
    println!("catalog_rows {} burst_byte {byte}", catalog.len());
}
