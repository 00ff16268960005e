//! Property tests of synthesis: the delivery order does not matter beyond the
//! documented tie rules, and a duplicated delivery never changes a figure.

use std::time::Duration;

use proptest::prelude::*;
use proptest::sample::Index;
use qis_core::{
    synthesize, synthesize_with, Method, OutcomePacket, PacketId, Received, SynthesisConfig,
};

const T: f64 = 1_764_000_000.0;
const PROBLEMS: [&str; 3] = ["energy-anomaly", "refrigerant-loss", "filter-clog"];
/// A few situations, some in the same bucket at resolution 4, so that
/// agreement ties and outliers happen.
const SITUATIONS: [&[f64]; 6] = [
    &[0.2, 0.9, 0.05, 0.7],
    &[0.21, 0.88, 0.06, 0.71],
    &[0.6, 0.1, 0.5, 0.3],
    &[0.61, 0.12, 0.52, 0.33],
    &[9.0, -7.0, 3.0, 12.0],
    &[0.2, 0.9],
];

/// `(agent, problem, confidence, situation)`; each packet gets its own
/// timestamp, so an agent's latest packet is never a tie.
fn packet_strategy() -> impl Strategy<Value = (u8, u8, u8, u8)> {
    (0u8..7, 0u8..3, 0u8..5, 0u8..6)
}

fn build(spec: &[(u8, u8, u8, u8)]) -> Vec<OutcomePacket> {
    spec.iter()
        .enumerate()
        .map(|(i, &(agent, problem, conf, sit))| OutcomePacket {
            agent_id: format!("agent-{agent}"),
            domain: "hvac".into(),
            problem_class: PROBLEMS[problem as usize].into(),
            conclusion: "finding".into(),
            confidence: [0.1, 0.5, 0.75, 0.9, 1.0][conf as usize],
            context_vector: SITUATIONS[sit as usize].to_vec(),
            timestamp: T - 60.0 * i as f64,
            source_node: "n".into(),
        })
        .collect()
}

fn received(p: &OutcomePacket) -> Received {
    Received {
        subject: "qis.iot.hvac".into(),
        id: PacketId::of(&p.encode().unwrap()),
        packet: p.clone(),
    }
}

fn config_strategy() -> impl Strategy<Value = SynthesisConfig> {
    (
        prop::sample::select(Method::ALL.to_vec()),
        1usize..4,
        prop::option::of(60u64..20_000),
        any::<bool>(),
        1u32..6,
    )
        .prop_map(|(method, quorum, half_life, outliers, resolution)| {
            SynthesisConfig::default()
                .with_method(method)
                .with_quorum(quorum)
                .with_half_life(half_life.map(Duration::from_secs))
                .unwrap()
                .with_outliers(outliers)
                .with_resolution(resolution)
                .unwrap()
                .with_now(T)
                .unwrap()
        })
}

prop_compose! {
    /// What one synthesis sees: its own packet (agent `me`, newer than any
    /// twin's), `min_twins` to 13 twins' packets, and a configuration.
    fn scene(min_twins: usize)(
        own in packet_strategy(),
        twins in prop::collection::vec(packet_strategy(), min_twins..14),
        config in config_strategy(),
    ) -> (OutcomePacket, Vec<OutcomePacket>, SynthesisConfig) {
        let mut own = build(&[own]).remove(0);
        own.agent_id = "me".into();
        own.timestamp = T + 1.0;
        (own, build(&twins), config)
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn delivery_order_does_not_matter(
        (own, twins, config) in scene(0),
        shuffle in any::<u64>(),
    ) {
        let mut shuffled = twins.clone();
        // Fisher-Yates with the case's own randomness.
        let mut state = shuffle | 1;
        for i in (1..shuffled.len()).rev() {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            shuffled.swap(i, (state % (i as u64 + 1)) as usize);
        }
        let a = synthesize_with(&config, &own, &twins);
        let b = synthesize_with(&config, &own, &shuffled);
        if a.method == Method::Seed && a.consensus_problem != b.consensus_problem {
            // Only the seed's first-seen rule may pick another problem, and
            // only between problems with as many votes.
            prop_assert_eq!(a.n_agents, b.n_agents);
            prop_assert_eq!(a.consensus_votes, b.consensus_votes);
            prop_assert_eq!(a.outliers, b.outliers);
        } else {
            prop_assert_eq!(a, b);
        }
    }

    #[test]
    fn a_duplicated_delivery_never_changes_a_figure(
        (own, twins, config) in scene(1),
        which in any::<Index>(),
        after in any::<Index>(),
        echo in any::<bool>(),
    ) {
        let delivered: Vec<Received> = twins.iter().map(received).collect();
        // A redelivery comes after the first delivery; the own packet's echo
        // can come at any point.
        let mut again = delivered.clone();
        if echo {
            again.insert(after.index(again.len() + 1), received(&own));
        } else {
            let i = which.index(delivered.len());
            let at = i + 1 + after.index(delivered.len() - i);
            again.insert(at, delivered[i].clone());
        }
        let a = synthesize_with(&config, &own, &delivered);
        let mut b = synthesize_with(&config, &own, &again);
        prop_assert_eq!(b.duplicates_ignored, a.duplicates_ignored + 1);
        b.duplicates_ignored -= 1;
        prop_assert_eq!(&a, &b);
        // The same with bare packets (identity by content), and the seed's rules.
        let bare: Vec<&OutcomePacket> = again.iter().map(|r| &r.packet).collect();
        let mut c = synthesize_with(&config, &own, bare);
        c.duplicates_ignored -= 1;
        prop_assert_eq!(&a, &c);
        let s1 = synthesize(&own, &delivered);
        let mut s2 = synthesize(&own, &again);
        s2.duplicates_ignored -= 1;
        s2.synthesized_at = s1.synthesized_at;
        s2.config = s1.config;
        prop_assert_eq!(s1, s2);
    }
}
