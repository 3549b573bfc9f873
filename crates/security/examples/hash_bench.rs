//! Measures argon2id with OWASP parameters on this machine.
//!
//! `cargo run --release -p access-security --example hash_bench [ROUNDS]`

use std::time::Instant;

use access_security::Argon2idHasher;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let rounds: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(20);
    let hasher = Argon2idHasher::owasp(1);
    // Warm up (page in the memory once).
    let phc = hasher.hash_blocking("correct-Horse-battery-9")?;
    let mut hash_ms = Vec::with_capacity(rounds);
    let mut verify_ms = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let t = Instant::now();
        let _ = hasher.hash_blocking("correct-Horse-battery-9")?;
        hash_ms.push(t.elapsed().as_secs_f64() * 1e3);
        let t = Instant::now();
        let ok = hasher.verify_blocking("correct-Horse-battery-9", &phc)?;
        verify_ms.push(t.elapsed().as_secs_f64() * 1e3);
        assert!(ok);
    }
    for (name, mut v) in [("hash", hash_ms), ("verify", verify_ms)] {
        v.sort_by(f64::total_cmp);
        let mean = v.iter().sum::<f64>() / v.len() as f64;
        println!(
            "argon2id m=19456 t=2 p=1 {name}: mean {mean:.1} ms, median {:.1} ms, min {:.1} ms, max {:.1} ms over {} rounds",
            v[v.len() / 2],
            v[0],
            v[v.len() - 1],
            v.len()
        );
    }
    Ok(())
}
