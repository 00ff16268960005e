//! The partition table through rebalances, without a broker: what librdkafka
//! hands the rebalance callbacks, and what the handle may commit afterwards.

use std::time::{Duration, Instant};

use qis_core::{Subject, SubjectPattern};

use super::*;
use crate::record::decode;

fn record(partition: i32, offset: i64) -> Buffered {
    let record = RawRecord {
        partition,
        offset,
        key: Some(b"qis.iot.hvac.x".to_vec()),
        subject_header: None,
        payload: Some(b"not a packet".to_vec()),
    };
    let decoded = decode(
        &Subject::default(),
        &SubjectPattern::new("qis.iot.>").unwrap(),
        &record,
    );
    Buffered { record, decoded }
}

/// What `fetch` does with the next buffered record of `partition`: it is
/// handed out and stays in flight until acked. Returns its offset.
fn deliver(st: &mut State, partition: i32) -> i64 {
    let part = st.parts.get_mut(&partition).expect("partition assigned");
    let b = part.buffer.pop_front().expect("a buffered record");
    st.buffered -= 1;
    st.buffered_bytes -= b.record.size();
    let offset = b.record.offset;
    part.handled_next = Some(offset + 1);
    part.in_flight.insert(
        offset,
        InFlight {
            record: b.record,
            due: Instant::now() + Duration::from_secs(60),
            count: 1,
        },
    );
    offset
}

/// A handle's state after its first assignment (generation 1).
fn assigned(partitions: &[i32], cooperative: bool) -> State {
    let mut st = State::default();
    st.assign(partitions, cooperative, 1);
    st
}

/// The poller reads `offsets` of `partition` under `generation`: each one
/// is buffered.
fn read(st: &mut State, partition: i32, offsets: std::ops::Range<i64>, generation: u64) {
    for o in offsets {
        assert!(
            st.offer(record(partition, o), generation),
            "offset {o} of partition {partition} was not buffered"
        );
    }
}

fn partitions(st: &State) -> Vec<i32> {
    st.parts.keys().copied().collect()
}

#[test]
fn incremental_assign_adds_partitions_and_revoke_removes_them() {
    // Cooperative: the first assignment, then another member joins and
    // partition 2 moves to it, then that member leaves and this one gets
    // 2 and 3 (added to what it kept).
    let mut st = assigned(&[0, 1, 2], true);
    assert!(st.offer(record(0, 0), 1));
    st.revoke(&[2], false);
    assert_eq!(
        partitions(&st),
        [0, 1],
        "a revoke removes only the revoked partitions"
    );
    st.assign(&[2, 3], true, 2);
    assert_eq!(
        partitions(&st),
        [0, 1, 2, 3],
        "an incremental assign adds to the partitions kept"
    );
    assert_eq!(st.buffered, 1, "a kept partition keeps what it read ahead");
    assert!(
        st.offer(record(1, 0), 2),
        "records of kept partitions are read"
    );

    // Eager: an assignment names every partition the member has.
    st.assign(&[3], false, 3);
    assert_eq!(partitions(&st), [3]);
}

#[test]
fn a_regained_partition_never_commits_below_the_groups_offset() {
    let mut st = assigned(&[0], false);
    read(&mut st, 0, 5..8, 1);
    // Offsets 5 and 6 are handed out and not acked.
    let (a, b) = (deliver(&mut st, 0), deliver(&mut st, 0));
    assert_eq!((a, b), (5, 6));
    // The member's session ends (assignment lost): the group moves the
    // partition to another member, which acks on up to offset 20. Then this
    // member gets the partition back and reads on from offset 20.
    st.revoke(&[0], false);
    st.assign(&[0], false, 2);
    st.checked(0, 2, Some(20));
    assert!(st.offer(record(0, 20), 2));
    let c = deliver(&mut st, 0);
    assert_eq!(c, 20);
    // Acking the old delivery and the new one must not commit below 20.
    st.ack(0, a);
    st.ack(0, c);
    let commits = st.pending_commits();
    assert!(
        commits.iter().all(|&(_, o)| o >= 20),
        "the member would move the group's committed offset back to {commits:?} (the group had 20)"
    );
}

#[test]
fn records_read_before_a_reassignment_are_not_buffered() {
    let mut st = assigned(&[0], false);
    // Read while the member had the partition the first time...
    let stale = record(0, 30);
    // ...then the partition moved away and came back; librdkafka reads on
    // from the group's committed offset, 20.
    st.revoke(&[0], false);
    st.assign(&[0], false, 3);
    assert!(
        !st.offer(stale, 1),
        "a record read under the earlier assignment was buffered"
    );
    assert!(
        st.offer(record(0, 20), 3),
        "the record at the group's committed offset was refused"
    );
}

#[test]
fn commits_never_go_below_the_offset_the_group_had_at_assignment() {
    let mut st = assigned(&[0], false);
    assert_eq!(st.unchecked(), [(0, 1)]);
    // The poller found the group's committed offset at 20.
    st.checked(0, 1, Some(20));
    assert!(st.unchecked().is_empty());
    // Whatever this member then reads below it (a broker resetting the
    // fetch position, a record buffered too early) cannot commit it.
    assert!(st.offer(record(0, 12), 1));
    let o = deliver(&mut st, 0);
    st.ack(0, o);
    assert_eq!(st.pending_commits(), []);
    assert!(st.offer(record(0, 20), 1));
    let o = deliver(&mut st, 0);
    st.ack(0, o);
    assert_eq!(st.pending_commits(), [(0, 21)]);
}

#[test]
fn a_check_of_an_earlier_assignment_is_ignored() {
    let mut st = assigned(&[0], false);
    st.revoke(&[0], false);
    st.assign(&[0], false, 3);
    // The poller checked the partition under the first assignment.
    st.checked(0, 1, Some(5));
    assert_eq!(
        st.unchecked(),
        [(0, 3)],
        "the new assignment is still to be checked"
    );
}

#[test]
fn retention_gap_counts_records_removed_before_they_were_acked() {
    assert_eq!(retention_gap(10, 25, 25), 15);
    assert_eq!(
        retention_gap(10, 25, 30),
        15,
        "no further than the first record read"
    );
    assert_eq!(
        retention_gap(10, 25, 5),
        0,
        "the log start says nothing was removed there"
    );
    assert_eq!(retention_gap(25, 25, 25), 0);
    assert_eq!(retention_gap(-1001, 25, 25), 0, "a logical offset");
}

#[test]
fn a_first_record_past_the_committed_offset_is_reported_once() {
    let mut st = assigned(&[0, 1], true);
    st.checked(0, 1, Some(3));
    st.checked(1, 1, Some(7));
    let batch = [
        (record(0, 10), 0), // read under an earlier assignment
        (record(0, 10), 1),
        (record(0, 11), 1),
        (record(1, 7), 1),
    ];
    assert_eq!(st.skipped_ahead(&batch), [(0, 3, 10)]);
    assert_eq!(st.skipped_ahead(&[(record(0, 12), 1)]), []);
    // A partition not checked yet is compared once it is.
    st.assign(&[2], true, 2);
    assert_eq!(st.skipped_ahead(&[(record(2, 5), 2)]), []);
    st.checked(2, 2, Some(1));
    assert_eq!(st.skipped_ahead(&[(record(2, 5), 2)]), [(2, 1, 5)]);
}

#[test]
fn unacked_counts_deliveries_in_flight_on_every_partition() {
    let mut st = assigned(&[0, 1], true);
    for p in [0, 1] {
        read(&mut st, p, 0..3, 1);
    }
    deliver(&mut st, 0);
    deliver(&mut st, 1);
    let o = deliver(&mut st, 1);
    assert_eq!(st.unacked(), 3);
    st.ack(1, o);
    assert_eq!(st.unacked(), 2);
    assert_eq!(
        st.revoke(&[0], false).in_flight,
        1,
        "one delivery in flight on the revoked partition"
    );
    assert_eq!(st.unacked(), 1);
}

#[test]
fn progress_not_committed_is_counted_when_its_partition_is_revoked() {
    let mut st = assigned(&[0, 1], true);
    for p in [0, 1] {
        st.checked(p, 1, Some(0));
        assert!(st.offer(record(p, 0), 1));
        let o = deliver(&mut st, p);
        st.ack(p, o);
    }
    // Partition 1's commit went through; partition 0's did not.
    assert_eq!(st.pending_commits(), [(0, 1), (1, 1)]);
    st.parts.get_mut(&0).unwrap().committed = None;
    let dropped = st.revoke(&[0, 1], false);
    assert_eq!(
        dropped,
        Revoked {
            in_flight: 0,
            uncommitted: 1
        }
    );
}

#[test]
fn an_eager_rebalance_gives_back_partitions_with_their_deliveries() {
    let mut st = assigned(&[0, 1], false);
    st.checked(0, 1, Some(5));
    st.checked(1, 1, Some(0));
    read(&mut st, 0, 5..7, 1);
    let o = deliver(&mut st, 0);
    assert_eq!(o, 5);
    // Another member joins: everything is revoked, partition 0 comes back.
    assert_eq!(st.revoke(&[0, 1], true), Revoked::default());
    assert_eq!(st.buffered, 0, "what was read ahead is read again");
    let dropped = st.assign(&[0], false, 3);
    assert_eq!(dropped, Revoked::default(), "partition 1 held nothing");
    assert!(st.parked.is_empty());
    assert_eq!(st.pending_commits(), [], "nothing commits before the check");
    assert_eq!(st.checked(0, 3, Some(5)), Revoked::default());
    // librdkafka reads again from 5; 5 is in flight, 6 is new again.
    assert!(!st.offer(record(0, 5), 3));
    assert!(st.offer(record(0, 6), 3));
    assert!(
        st.ack(0, o),
        "the delivery made before the rebalance is acked"
    );
    assert_eq!(st.pending_commits(), [(0, 6)]);
}

#[test]
fn a_partition_given_back_after_the_group_read_on_starts_afresh() {
    let mut st = assigned(&[0], false);
    st.checked(0, 1, Some(5));
    assert!(st.offer(record(0, 5), 1));
    let o = deliver(&mut st, 0);
    st.revoke(&[0], true);
    // This member was away for a while: another one read on to 20.
    st.assign(&[0], false, 3);
    let dropped = st.checked(0, 3, Some(20));
    assert_eq!(dropped.in_flight, 1);
    assert!(!st.ack(0, o));
    assert_eq!(st.pending_commits(), []);
    assert!(st.offer(record(0, 20), 3));
}

#[test]
fn backlog_counts_from_the_handles_position_or_the_groups() {
    use std::collections::HashMap;
    // This handle holds partition 0 and has read up to offset 4 (two of
    // them in flight); partition 1 is another member's, committed at 7;
    // partition 2 has no commit, and retention starts it at 3.
    let mut st = assigned(&[0], true);
    read(&mut st, 0, 0..4, 1);
    for _ in 0..4 {
        deliver(&mut st, 0);
    }
    st.ack(0, 0);
    st.ack(0, 1);
    let ranges = [(0, 0, 10), (1, 0, 12), (2, 3, 5)];
    let committed = HashMap::from([(0, 2), (1, 7)]);
    let b = st.backlog(&ranges, &committed);
    assert_eq!(b.waiting, (10 - 4) + (12 - 7) + (5 - 3));
    assert_eq!(b.unacked, 2);
    // A committed offset below the log start counts from the log start.
    let b = st.backlog(&[(1, 9, 12)], &committed);
    assert_eq!(b.waiting, 3);
    // A listed end behind what the handle read: what it read counts.
    read(&mut st, 0, 4..6, 1);
    let b = st.backlog(&[(0, 0, 3)], &committed);
    assert_eq!(
        b.waiting, 2,
        "offsets 4 and 5, read ahead and not delivered"
    );
}

fn in_flight(offset: i64) -> InFlight {
    InFlight {
        record: record(0, offset).record,
        due: Instant::now(),
        count: 1,
    }
}

#[test]
fn the_in_flight_table_keeps_offsets_in_order_whatever_the_ack_order() {
    let mut t = InFlightTable::default();
    for o in [5, 6, 7, 9, 3, 8] {
        t.insert(o, in_flight(o));
    }
    assert_eq!(t.len(), 6);
    assert_eq!(t.first_offset(), Some(3));
    let offsets: Vec<i64> = t
        .iter_mut()
        .map(|(o, f)| {
            assert_eq!(f.record.offset, o);
            o
        })
        .collect();
    assert_eq!(offsets, [3, 5, 6, 7, 8, 9]);
    // Acks out of order: the frontier moves once the lowest is acked.
    assert!(t.remove(6).is_some());
    assert!(t.remove(6).is_none(), "acked twice");
    assert!(t.remove(4).is_none(), "never in flight");
    assert_eq!(t.first_offset(), Some(3));
    assert!(t.remove(3).is_some());
    assert_eq!(t.first_offset(), Some(5));
    assert!(t.remove(5).is_some());
    assert_eq!(t.first_offset(), Some(7), "6 was acked already");
    t.get_mut(8).expect("in flight").count = 2;
    assert_eq!(t.values().map(|f| f.count).collect::<Vec<_>>(), [1, 2, 1]);
    assert!(t.get_mut(6).is_none());
    // Insert again at a held offset: replaced, counted once.
    t.insert(7, in_flight(7));
    assert_eq!(t.len(), 3);
    for o in [7, 8, 9] {
        assert!(t.remove(o).is_some());
    }
    assert!(t.is_empty());
    assert_eq!(t.first_offset(), None);
}

#[test]
fn acks_behind_an_unacked_delivery_do_not_pile_up() {
    let mut t = InFlightTable::default();
    t.insert(0, in_flight(0));
    for o in 1..10_000 {
        t.insert(o, in_flight(o));
        assert!(t.remove(o).is_some());
    }
    assert_eq!(t.len(), 1);
    assert_eq!(t.first_offset(), Some(0));
    assert!(t.slots.len() <= 2 * t.len() + 65, "{} slots", t.slots.len());
    assert!(t.remove(0).is_some());
    assert!(t.is_empty());
}
