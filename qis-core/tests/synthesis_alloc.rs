//! Synthesis allocates nothing per packet: a counting global allocator (in
//! this test binary only) shows the allocations of one synthesis do not grow
//! with the number of packets.

use std::alloc::System;

use qis_core::{synthesize_with, OutcomePacket, PacketId, Received, SynthesisConfig};
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const T: f64 = 1_764_000_000.0;

fn packet(i: usize, ts: f64) -> OutcomePacket {
    OutcomePacket {
        agent_id: format!("agent-{i:06}"),
        domain: "hvac".into(),
        problem_class: ["energy-anomaly", "refrigerant-loss", "filter-clog"][i % 7 % 3].into(),
        conclusion: "finding".into(),
        confidence: 0.5 + (i % 5) as f64 / 10.0,
        // Two situations per problem, and one wild agent (the result lists
        // each outlier: one string per outlier is output, not work).
        context_vector: if i == 7 {
            vec![9.0, -9.0, 9.0, 9.0]
        } else {
            vec![0.2 + (i % 2) as f64 * 0.3, 0.9, 0.05, 0.7]
        },
        timestamp: ts,
        source_node: "n".into(),
    }
}

/// A delivery with a distinct id (not a SHA-256: the test needs only distinct
/// ids, and hashing 200,000 bodies in a debug build is slow).
fn received(p: OutcomePacket, n: usize) -> Received {
    let mut id = [0u8; 32];
    id[..8].copy_from_slice(&(n as u64).to_le_bytes());
    Received {
        subject: "qis.iot.hvac".into(),
        id: PacketId::from_bytes(id),
        packet: p,
    }
}

/// `n` deliveries: distinct agents, then again with every tenth a
/// redelivery and every tenth agent sending an older packet too.
fn deliveries(n: usize, noisy: bool) -> Vec<Received> {
    let mut v: Vec<Received> = (0..n)
        .map(|i| received(packet(i, T - i as f64), i))
        .collect();
    if noisy {
        for i in (0..n).step_by(10) {
            v[i + 1] = v[i].clone();
            v[i + 2] = received(packet(i, T - 1e6), n + i);
        }
    }
    v
}

/// The fewest allocations one synthesis made over three runs (another thread
/// of the test harness could allocate meanwhile; it cannot take any away).
fn allocations(own: &OutcomePacket, twins: &[Received], config: Option<&SynthesisConfig>) -> usize {
    (0..3)
        .map(|_| {
            let region = Region::new(GLOBAL);
            let s = match config {
                Some(c) => synthesize_with(c, own, twins),
                None => synthesize_with(&SynthesisConfig::seed(), own, twins),
            };
            let n = region.change().allocations;
            drop(s);
            n
        })
        .min()
        .unwrap_or(usize::MAX)
}

#[test]
fn allocations_do_not_grow_with_the_packets() {
    let own = packet(999_999, T);
    let config = SynthesisConfig::default().with_now(T).unwrap();
    for noisy in [false, true] {
        let small = deliveries(1_000, noisy);
        let large = deliveries(100_000, noisy);
        for c in [None, Some(&config)] {
            let a = allocations(&own, &small, c);
            let b = allocations(&own, &large, c);
            // The result's strings and a handful of arrays sized up front;
            // the set of packets that lost to a later one grows as a hash
            // set does, in doublings: 100× the packets is 7 doublings.
            let slack = if noisy { 8 } else { 0 };
            eprintln!(
                "noisy={noisy} config={}: {a} allocations for 1,000 packets, {b} for 100,000",
                c.is_some()
            );
            assert!(a < 64, "{a} allocations for 1,000 packets");
            assert!(
                b <= a + slack,
                "noisy={noisy} config={c:?}: {a} allocations for 1,000 packets, {b} for 100,000"
            );
            let s = match c {
                Some(c) => synthesize_with(c, &own, &large),
                None => synthesize_with(&SynthesisConfig::seed(), &own, &large),
            };
            if noisy {
                assert_eq!(s.duplicates_ignored, 10_000);
                assert_eq!(s.superseded_ignored, 10_000);
            }
            assert_eq!(s.outliers.len(), usize::from(c.is_some()));
        }
    }
}
