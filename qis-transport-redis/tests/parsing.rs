//! Property tests of how the transport reads Redis replies (no server):
//! whatever bytes arrive, parsing ends in a value or a typed error, never a
//! panic; well-formed replies (RESP2 arrays and RESP3 maps) give back
//! exactly what was in them; a malformed entry is an `InvalidPacket` error
//! for that entry alone. The same entry points serve the fuzz targets
//! (`qis_transport_redis::fuzzing`).

use proptest::prelude::*;
use qis_conformance::support::pkt;
use qis_core::{EncodedPacket, ErrorKind, PacketId, Position, Subject};
use qis_transport_redis::fuzzing::{self, Dropped, Stored, PREFIX};

/// RESP encoders for the replies built below.
fn bulk(b: &[u8]) -> Vec<u8> {
    let mut out = format!("${}\r\n", b.len()).into_bytes();
    out.extend_from_slice(b);
    out.extend_from_slice(b"\r\n");
    out
}

fn int(i: i64) -> Vec<u8> {
    format!(":{i}\r\n").into_bytes()
}

fn array(items: Vec<Vec<u8>>) -> Vec<u8> {
    let mut out = format!("*{}\r\n", items.len()).into_bytes();
    for i in items {
        out.extend(i);
    }
    out
}

fn map(pairs: Vec<(Vec<u8>, Vec<u8>)>) -> Vec<u8> {
    let mut out = format!("%{}\r\n", pairs.len()).into_bytes();
    for (k, v) in pairs {
        out.extend(k);
        out.extend(v);
    }
    out
}

/// One entry to put in a reply: its id, its body, and whether it carries
/// its packet id in an `id` field.
#[derive(Debug, Clone)]
struct Made {
    ms: u64,
    seq: u64,
    body: Vec<u8>,
    with_id: bool,
    valid: bool,
}

fn subject_token() -> impl Strategy<Value = String> {
    "[a-z0-9_-]{1,12}"
}

fn made_entry() -> impl Strategy<Value = Made> {
    (
        any::<u64>(),
        any::<u64>(),
        any::<usize>(),
        any::<bool>(),
        prop_oneof![
            3 => Just(None),
            1 => proptest::collection::vec(any::<u8>(), 0..64).prop_map(Some),
        ],
    )
        .prop_map(|(ms, seq, n, with_id, garbage)| match garbage {
            None => {
                let prefix = Subject::new(PREFIX).unwrap();
                let p = pkt("prop", "hvac", "parsing", n % 1_000_000);
                let body = EncodedPacket::readable(&p, &prefix)
                    .unwrap()
                    .body()
                    .to_vec();
                Made {
                    ms,
                    seq,
                    body,
                    with_id,
                    valid: true,
                }
            }
            Some(body) => Made {
                ms,
                seq,
                body,
                with_id,
                valid: false,
            },
        })
}

/// An XREADGROUP reply over `streams`, as RESP2 arrays or a RESP3 map.
fn read_reply_bytes(streams: &[(String, Vec<Made>)], resp3: bool) -> Vec<u8> {
    let per_stream = |(subject, entries): &(String, Vec<Made>)| {
        let key = bulk(format!("{PREFIX}:s:{PREFIX}.hvac.{subject}").as_bytes());
        let entries = array(
            entries
                .iter()
                .map(|e| {
                    let mut fields = Vec::new();
                    if e.with_id {
                        fields.push(bulk(b"id"));
                        fields.push(bulk(PacketId::of(&e.body).to_hex().as_bytes()));
                    }
                    fields.push(bulk(b"body"));
                    fields.push(bulk(&e.body));
                    array(vec![
                        bulk(format!("{}-{}", e.ms, e.seq).as_bytes()),
                        array(fields),
                    ])
                })
                .collect(),
        );
        (key, entries)
    };
    if resp3 {
        map(streams.iter().map(per_stream).collect())
    } else {
        array(
            streams
                .iter()
                .map(per_stream)
                .map(|(k, v)| array(vec![k, v]))
                .collect(),
        )
    }
}

fn resp_value() -> impl Strategy<Value = Vec<u8>> {
    let leaf = prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..24).prop_map(|b| bulk(&b)),
        any::<i64>().prop_map(int),
        Just(b"_\r\n".to_vec()),
        Just(b"$-1\r\n".to_vec()),
        "[a-z0-9 -]{0,12}".prop_map(|s| format!("+{s}\r\n").into_bytes()),
        "[a-z0-9 ]{0,12}".prop_map(|s| format!("-ERR {s}\r\n").into_bytes()),
    ];
    leaf.prop_recursive(4, 64, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(array),
            proptest::collection::vec((inner.clone(), inner), 0..4).prop_map(map),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// An entry id `ms-seq` reads back as those numbers, also through
    /// `Position`'s display.
    #[test]
    fn entry_ids_round_trip(ms in any::<u64>(), seq in any::<u64>()) {
        let want = Position::StreamId { ms, seq };
        prop_assert_eq!(fuzzing::entry_id(&format!("{ms}-{seq}")), Some(want));
        let shown = want.to_string();
        prop_assert_eq!(fuzzing::entry_id(shown.trim_start_matches("id ")), Some(want));
    }

    /// Any text is an entry id or not; never a panic, and a `-` is needed.
    #[test]
    fn any_text_is_an_entry_id_or_none(s in ".{0,48}") {
        if fuzzing::entry_id(&s).is_some() {
            prop_assert!(s.contains('-'));
        }
    }

    /// Whatever the bytes, every reply reader returns a value or an error.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = fuzzing::read_reply(&bytes);
        let _ = fuzzing::deposit_reply(&bytes, 2);
        let _ = fuzzing::trim_reply(&bytes);
        let _ = fuzzing::backlog_reply(&bytes);
    }

    /// Whatever shape a well-formed RESP reply has, the readers return a
    /// value or a typed error.
    #[test]
    fn arbitrary_replies_never_panic(reply in resp_value(), n in 0usize..4) {
        let value = fuzzing::parse_resp(&reply);
        prop_assert!(value.is_ok(), "the generator built bad RESP: {:?}", value);
        if let Ok(entries) = fuzzing::read_reply(&reply) {
            for e in entries {
                if let Err(err) = e.decoded {
                    prop_assert_eq!(err.kind(), ErrorKind::InvalidPacket);
                }
            }
        }
        let _ = fuzzing::deposit_reply(&reply, n);
        let _ = fuzzing::trim_reply(&reply);
        let _ = fuzzing::backlog_reply(&reply);
    }

    /// A read reply gives back each entry, in order: stream, id, position,
    /// the packet (its id from the `id` field or the body) and the subject
    /// from the stream key; a malformed body is an `InvalidPacket` error for
    /// that entry only. RESP2 arrays and RESP3 maps read the same.
    #[test]
    fn read_replies_round_trip(
        streams in proptest::collection::vec(
            (subject_token(), proptest::collection::vec(made_entry(), 0..5)),
            0..4,
        ),
        resp3 in any::<bool>(),
    ) {
        let got = fuzzing::read_reply(&read_reply_bytes(&streams, resp3)).unwrap();
        let want: Vec<(&String, &Made)> = streams
            .iter()
            .flat_map(|(s, es)| es.iter().map(move |e| (s, e)))
            .collect();
        prop_assert_eq!(got.len(), want.len());
        for (g, (subject, m)) in got.iter().zip(want) {
            let subject = format!("{PREFIX}.hvac.{subject}");
            prop_assert_eq!(&g.stream, &format!("{PREFIX}:s:{subject}"));
            prop_assert_eq!(&g.id, &format!("{}-{}", m.ms, m.seq));
            match &g.decoded {
                Ok((received, position)) => {
                    prop_assert!(m.valid, "garbage decoded as a packet");
                    prop_assert_eq!(*position, Position::StreamId { ms: m.ms, seq: m.seq });
                    prop_assert_eq!(&received.subject, &subject);
                    prop_assert_eq!(received.id, PacketId::of(&m.body));
                    let encoded = received.packet.encode().unwrap();
                    prop_assert_eq!(encoded.as_ref(), m.body.as_slice());
                }
                Err(e) => {
                    prop_assert!(!m.valid, "a valid packet failed: {}", e);
                    prop_assert_eq!(e.kind(), ErrorKind::InvalidPacket);
                }
            }
        }
    }

    /// The deposit reply: per packet, duplicate or not, the position, and
    /// for a duplicate the original's subject; then the dropped reports.
    #[test]
    fn deposit_replies_round_trip(
        items in proptest::collection::vec(
            (any::<bool>(), any::<u64>(), any::<u64>(), proptest::option::of(subject_token())),
            0..8,
        ),
        dropped in proptest::collection::vec((subject_token(), subject_token(), 0u64..1_000_000), 0..3),
    ) {
        let mut flat = Vec::new();
        let mut want = Vec::new();
        for (dup, ms, seq, original) in &items {
            flat.push(int(i64::from(*dup)));
            let original = original.as_ref().filter(|_| *dup);
            match original {
                Some(s) => flat.push(bulk(format!("{ms}-{seq} {s}").as_bytes())),
                None => flat.push(bulk(format!("{ms}-{seq}").as_bytes())),
            }
            want.push(Stored {
                duplicate: *dup,
                position: Position::StreamId { ms: *ms, seq: *seq },
                original_subject: original.cloned(),
            });
        }
        let dropped_resp = array(
            dropped
                .iter()
                .flat_map(|(s, g, n)| [bulk(s.as_bytes()), bulk(g.as_bytes()), int(*n as i64)])
                .collect(),
        );
        let reply = array(vec![array(flat), dropped_resp]);
        let (stored, got_dropped) = fuzzing::deposit_reply(&reply, items.len()).unwrap();
        prop_assert_eq!(stored, want);
        let want_dropped: Vec<Dropped> = dropped
            .iter()
            .map(|(s, g, n)| Dropped { subject: s.clone(), consumer: g.clone(), unacked: *n })
            .collect();
        prop_assert_eq!(got_dropped, want_dropped);
        // A reply for another number of packets is refused, not misread.
        prop_assert!(fuzzing::deposit_reply(&reply, items.len() + 1).is_err());
    }

    /// The trim and backlog replies read back as built.
    #[test]
    fn trim_and_backlog_replies_round_trip(
        removed in 0u64..1_000_000,
        deleted in proptest::collection::vec(subject_token(), 0..4),
        waiting in 0u64..1_000_000,
        unacked in 0u64..1_000_000,
    ) {
        let reply = array(vec![
            int(removed as i64),
            array(Vec::new()),
            array(deleted.iter().map(|s| bulk(s.as_bytes())).collect()),
        ]);
        let (r, d, del) = fuzzing::trim_reply(&reply).unwrap();
        prop_assert_eq!(r, removed);
        prop_assert!(d.is_empty());
        prop_assert_eq!(del, deleted);
        let reply = array(vec![int(waiting as i64), int(unacked as i64)]);
        prop_assert_eq!(fuzzing::backlog_reply(&reply).unwrap(), (waiting, unacked));
    }
}

/// Lengths far beyond the bytes that follow are refused, not allocated.
#[test]
fn huge_declared_lengths_are_refused() {
    for reply in [
        &b"*2147483647\r\n"[..],
        b"*9223372036854775807\r\n",
        b"$2147483647\r\nab\r\n",
        b"%2147483647\r\n",
        b"~2147483647\r\n",
        b"*1\r\n*2147483647\r\n",
        b"*-5\r\n",
        b"$-7\r\n",
    ] {
        assert!(
            fuzzing::read_reply(reply).is_err()
                || fuzzing::read_reply(reply).is_ok_and(|e| e.is_empty())
        );
        let _ = fuzzing::deposit_reply(reply, 1);
    }
}
