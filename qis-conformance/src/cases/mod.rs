//! The shared cases, one module per concept.
//!
//! Each case is a plain `pub async fn(DynBackend, Subject) -> CaseResult`
//! that uses only the [`Backend`](crate::Backend) and the
//! [`OutcomeTransport`](qis_core::OutcomeTransport) trait and returns
//! `Err` saying what did not happen. [`all`] lists them with the
//! capabilities each needs; the runner turns that list into trials.

pub mod consumer;
pub mod deposit;
pub mod fault;
pub mod live;
pub mod malformed;
pub mod similarity;
pub mod start;
pub mod stream;
pub mod wildcard;

use qis_core::{DynTransport, OutcomePacket, Receipt, Subject};

use crate::backend::DynBackend;
use crate::case::Case;
use crate::support::{context, deposit_one};

/// `case!(module::name, Capability…)`: the registry entry for a case.
macro_rules! case {
    ($module:ident :: $name:ident $(, $need:ident)*) => {
        Case::new(
            stringify!($name),
            &[$($crate::Capability::$need),*],
            |backend, prefix| Box::pin($module::$name(backend, prefix)),
        )
    };
}

/// Every case of the suite, with the capabilities it needs.
pub fn all() -> Vec<Case> {
    vec![
        // Every case that reads the store back does so with a durable
        // consumer, hence `Durable`.
        case!(deposit::deposit_returns_receipt, Durable),
        case!(deposit::redeposit_is_recognised, Dedup, Durable),
        case!(
            deposit::duplicate_on_another_subject_names_the_original,
            Dedup,
            Durable
        ),
        case!(deposit::batch_deposit_keeps_order, Durable),
        case!(
            deposit::concurrent_depositors_nothing_lost_or_doubled,
            Durable
        ),
        case!(deposit::one_publisher_order_per_subject, Durable),
        case!(consumer::consumer_resumes_by_name_after_last_ack, Durable),
        case!(
            consumer::unacked_delivery_comes_back_after_ack_wait,
            Durable
        ),
        case!(consumer::nak_redelivers, Durable, Nak),
        case!(consumer::ack_on_another_consumer_is_invalid_input, Durable),
        case!(wildcard::wildcard_isolation_durable, Durable),
        case!(wildcard::wildcard_isolation_live, Live),
        case!(
            start::start_all_receives_history_start_new_does_not,
            Durable
        ),
        case!(start::start_since_time, Durable, StartSince),
        case!(malformed::invalid_packets_rejected_before_send, Durable),
        case!(malformed::garbage_is_skipped_durable, Durable),
        case!(malformed::garbage_is_skipped_live, Live),
        case!(live::live_subscription_receives_matching, Live),
        case!(
            live::fire_and_forget_reaches_live_not_store,
            FireAndForget,
            Live,
            Durable
        ),
        case!(stream::delivery_stream_is_continuous, Durable),
        case!(stream::close_flushes_acks, Durable),
        case!(
            consumer::shared_consumer_splits_work,
            Durable,
            SharedConsumers
        ),
        case!(similarity::similar_finds_exact_neighbours, Similarity),
        case!(similarity::similar_bridges_bucket_edges, Similarity),
        case!(similarity::similar_honours_min_score, Similarity),
        case!(similarity::similar_never_matches_other_lengths, Similarity),
        case!(similarity::similar_returns_a_redeposit_once, Similarity),
        case!(similarity::similar_respects_patterns, Similarity),
        case!(consumer::consumers_listed_with_backlog, Durable, Backlog),
        case!(
            fault::consumer_killed_mid_batch_resumes_by_name,
            Durable,
            Persistent
        ),
        case!(
            fault::writer_killed_mid_deposit_keeps_every_receipt,
            Durable,
            Persistent
        ),
        case!(fault::server_restarted_mid_stream_keeps_every_ack, Durable).with_private_server(),
    ]
}

/// Open a transport on `prefix`, as a case's first step.
async fn open(backend: &DynBackend, prefix: &Subject) -> Result<DynTransport, String> {
    backend
        .open(prefix)
        .await
        .map_err(context("open transport"))
}

/// Deposit `packet` on its readable subject.
async fn deposit(t: &DynTransport, packet: &OutcomePacket) -> Result<Receipt, String> {
    deposit_one(&**t, packet).await
}
