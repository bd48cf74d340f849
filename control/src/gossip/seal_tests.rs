use super::*;

fn key(id: u32, b: u8) -> ClusterKey {
    ClusterKey::new(id, &[b; 32])
}

fn one(s: &Sealer, k: &ClusterKey, msg: &[u8]) -> Vec<u8> {
    let mut d = s.seal(k, 0, msg).unwrap();
    assert_eq!(d.len(), 1);
    d.remove(0)
}

#[test]
fn seal_then_open_round_trips_with_any_key_of_the_ring() {
    let s = Sealer::new();
    let (k1, k2) = (key(1, 1), key(2, 2));
    let mut o = Opener::new();
    let now = Instant::now();
    for (k, msg) in [(&k1, &b"hello"[..]), (&k2, b""), (&k1, &[7u8; 1400])] {
        let d = one(&s, k, msg);
        assert_eq!(d.len(), msg.len() + OVERHEAD);
        assert_eq!(d[0], MAGIC);
        // The plaintext is not in the datagram.
        if msg.len() > 4 {
            assert!(!d.windows(msg.len()).any(|w| w == msg));
        }
        let ring = [k2.clone(), k1.clone()];
        assert_eq!(o.open(&ring, &d, now), Ok(Some((0, msg.to_vec()))));
    }
}

#[test]
fn any_changed_byte_fails_to_open_and_moves_nothing() {
    let s = Sealer::new();
    let k = key(1, 1);
    let d = one(&s, &k, b"the endpoint table");
    let mut o = Opener::new();
    let now = Instant::now();
    // Every byte after the magic, header (AAD) and ciphertext and tag alike.
    for i in 1..d.len() {
        let mut bad = d.clone();
        bad[i] ^= 0x01;
        let r = o.open(std::slice::from_ref(&k), &bad, now);
        assert!(
            matches!(
                r,
                Err(Refusal::OpenFailed | Refusal::UnknownKey | Refusal::Malformed)
            ),
            "byte {i}: {r:?}"
        );
    }
    // A wrong key under the right id.
    assert_eq!(
        o.open(&[key(1, 9)], &d, now),
        Err(Refusal::OpenFailed),
        "a forgery"
    );
    // None of those moved the replay window: the real one still opens.
    assert!(o.open(&[k], &d, now).unwrap().is_some());
}

#[test]
fn unknown_key_ids_short_and_foreign_datagrams_are_refused_by_reason() {
    let s = Sealer::new();
    let d = one(&s, &key(7, 1), b"x");
    let mut o = Opener::new();
    let now = Instant::now();
    assert_eq!(
        o.open(&[key(1, 1), key(2, 1)], &d, now),
        Err(Refusal::UnknownKey)
    );
    assert_eq!(o.open(&[], &d, now), Err(Refusal::NoKey));
    for junk in [
        vec![],
        vec![MAGIC],
        vec![MAGIC; OVERHEAD - 1],
        // Another magic: plaintext of some other protocol.
        [&[0x53, 0xb0][..], &[0; 60]].concat(),
    ] {
        assert_eq!(o.open(&[key(7, 1)], &junk, now), Err(Refusal::Malformed));
    }
    // Fragment fields out of range.
    let mut bad = d.clone();
    bad[38] = 0;
    assert_eq!(o.open(&[key(7, 1)], &bad, now), Err(Refusal::Malformed));
}

#[test]
fn replays_are_refused_and_the_window_accepts_reordering() {
    let s = Sealer::new();
    let k = key(1, 1);
    let ring = [k.clone()];
    let ds: Vec<Vec<u8>> = (0..100).map(|i| one(&s, &k, &[i as u8; 8])).collect();
    let mut o = Opener::new();
    let now = Instant::now();
    // Out of order within the window: all open once.
    for i in [5, 3, 4, 0, 1, 2, 9, 6, 8, 7] {
        assert!(o.open(&ring, &ds[i], now).unwrap().is_some(), "{i}");
    }
    for (i, d) in ds.iter().enumerate().take(10) {
        assert_eq!(o.open(&ring, d, now), Err(Refusal::Replay), "{i}");
    }
    // Far ahead: what fell out of the 64-wide window is refused even if
    // it was never seen.
    assert!(o.open(&ring, &ds[99], now).unwrap().is_some());
    assert_eq!(o.open(&ring, &ds[20], now), Err(Refusal::Replay));
    assert!(o.open(&ring, &ds[40], now).unwrap().is_some());
    assert_eq!(o.open(&ring, &ds[40], now), Err(Refusal::Replay));
    // Another process (sender) has its own window.
    let s2 = Sealer::new();
    assert!(o.open(&ring, &one(&s2, &k, b"x"), now).unwrap().is_some());
}

#[test]
fn nonces_are_unique_per_sender_and_senders_differ() {
    let s = Sealer::new();
    let k = key(1, 1);
    let mut counters = std::collections::BTreeSet::new();
    for _ in 0..1000 {
        let h = Header::parse(&one(&s, &k, b"m")).unwrap();
        assert_eq!(h.sender, s.sender());
        assert!(counters.insert(h.counter), "counter {} twice", h.counter);
    }
    // Fragments take a counter each, too.
    let big = vec![1u8; MAX_DATAGRAM];
    for d in s.seal(&k, 0, &big).unwrap() {
        assert!(counters.insert(Header::parse(&d).unwrap().counter));
    }
    assert_ne!(Sealer::new().sender(), s.sender());
}

#[test]
fn big_messages_go_as_fragments_and_reassemble() {
    let s = Sealer::new();
    let k = key(1, 1);
    let ring = [k.clone()];
    let big: Vec<u8> = (0..MAX_DATAGRAM).map(|i| (i % 251) as u8).collect();
    let ds = s.seal(&k, 0, &big).unwrap();
    assert_eq!(ds.len(), 2);
    assert!(ds.iter().all(|d| d.len() <= MAX_DATAGRAM));
    let mut o = Opener::new();
    let now = Instant::now();
    // Last fragment first.
    assert_eq!(o.open(&ring, &ds[1], now), Ok(None));
    assert_eq!(o.pending(), 1);
    assert_eq!(o.open(&ring, &ds[0], now), Ok(Some((0, big.clone()))));
    assert_eq!(o.pending(), 0);
    // A message that fits exactly stays one datagram.
    let fits = vec![3u8; MAX_FRAGMENT_PLAINTEXT];
    assert_eq!(s.seal(&k, 0, &fits).unwrap().len(), 1);
    // Beyond four fragments: refused at the sender.
    assert!(s
        .seal(&k, 0, &vec![0u8; 4 * MAX_FRAGMENT_PLAINTEXT + 1])
        .is_err());
}

#[test]
fn a_missing_fragment_expires_and_pending_messages_are_bounded() {
    let s = Sealer::new();
    let k = key(1, 1);
    let ring = [k.clone()];
    let big = vec![9u8; MAX_DATAGRAM];
    let mut o = Opener::new();
    let t0 = Instant::now();
    let ds = s.seal(&k, 0, &big).unwrap();
    assert_eq!(o.open(&ring, &ds[0], t0), Ok(None));
    assert_eq!(o.pending(), 1);
    // Its other half never comes; 2 s later another message's fragment
    // arrives and the stale one is dropped.
    let later = t0 + REASSEMBLY_TTL + Duration::from_millis(1);
    let ds2 = s.seal(&k, 0, &big).unwrap();
    assert_eq!(o.open(&ring, &ds2[0], later), Ok(None));
    assert_eq!((o.pending(), o.expired), (1, 1));
    // The late half of the first message finds nothing to complete.
    assert_eq!(o.open(&ring, &ds[1], later), Ok(None));
    // Many half messages: never more than MAX_PENDING kept.
    for _ in 0..(MAX_PENDING * 2) {
        let d = s.seal(&k, 0, &big).unwrap();
        let _ = o.open(&ring, &d[0], later);
    }
    assert!(o.pending() <= MAX_PENDING);
}

#[test]
fn the_channel_travels_sealed_with_every_fragment() {
    let s = Sealer::new();
    let k = key(1, 1);
    let ring = [k.clone()];
    let mut o = Opener::new();
    let now = Instant::now();
    let d = s.seal(&k, 4097, b"network gossip").unwrap().remove(0);
    assert_eq!(Header::parse(&d).unwrap().channel, 4097);
    assert_eq!(
        o.open(&ring, &d, now),
        Ok(Some((4097, b"network gossip".to_vec())))
    );
    // Moving a datagram to another channel breaks its seal.
    let mut moved = s.seal(&k, 4097, b"network gossip").unwrap().remove(0);
    moved[5..9].copy_from_slice(&4098u32.to_be_bytes());
    assert_eq!(o.open(&ring, &moved, now), Err(Refusal::OpenFailed));
    // A fragmented message keeps its channel.
    let big = vec![3u8; MAX_FRAGMENT_PLAINTEXT + 10];
    let ds = s.seal(&k, 7, &big).unwrap();
    assert_eq!(ds.len(), 2);
    assert_eq!(o.open(&ring, &ds[0], now), Ok(None));
    assert_eq!(o.open(&ring, &ds[1], now), Ok(Some((7, big))));
}
