use super::*;
use crate::checkpoint::{KeyGroupRef, OperatorStateRef};
use crate::report::causes as messages;

fn manifest(id: u64, chunks: &[ChunkRef]) -> CheckpointManifest {
    let mut m = CheckpointManifest::empty("wordcount", CheckpointId(id), 128);
    m.operators = vec![OperatorStateRef {
        operator_id: "ab".into(),
        uid: Some("counter".into()),
        name: "count".into(),
        parallelism: 2,
        module: "blake3:00".into(),
        state_format: Some(("wordcount".into(), 1)),
        key_groups: chunks
            .iter()
            .enumerate()
            .map(|(i, c)| KeyGroupRef::whole(i as u16, c.clone()))
            .collect(),
        operator_state: vec![],
    }];
    m
}

/// Writes `chunks` into one segment of a new transaction and commits
/// manifest `id` over them.
fn commit(store: &CheckpointStore, id: u64, chunks: &[&[u8]]) -> Vec<ChunkRef> {
    let txn = begin(store);
    let mut w = txn.segment();
    let refs: Vec<ChunkRef> = chunks.iter().map(|c| w.put(c).0).collect();
    txn.finished(w).unwrap();
    txn.put_manifest(&manifest(id, &refs)).unwrap();
    refs
}

fn exercise(store: &CheckpointStore) {
    let refs = commit(store, 2, &[b"abc", b"defg"]);
    assert_eq!(
        refs[0].at,
        Some(Span {
            segment: refs[0].at.clone().unwrap().segment,
            offset: 0
        })
    );
    assert_eq!(
        refs[1].at.as_ref().unwrap().offset,
        3,
        "back to back in one segment"
    );
    assert_eq!(&store.get_chunk(refs[1].loc()).unwrap()[..], b"defg");
    commit(store, 10, &[b"x"]);
    assert_eq!(
        store.list_checkpoints("wordcount").unwrap(),
        vec![CheckpointId(2), CheckpointId(10)],
        "numeric order"
    );
    assert_eq!(
        store.get_manifest("wordcount", CheckpointId(2)).unwrap(),
        manifest(2, &refs)
    );
    assert_eq!(store.list_jobs().unwrap(), vec!["wordcount"]);
    assert!(store.list_checkpoints("other").unwrap().is_empty());
    let again = begin(store).put_manifest(&manifest(2, &refs)).unwrap_err();
    assert!(
        matches!(again, StoreError::Exists { .. }),
        "a manifest is never overwritten: {again}"
    );
    store.delete_manifest("wordcount", CheckpointId(2)).unwrap();
    store.delete_manifest("wordcount", CheckpointId(2)).unwrap();
    assert_eq!(
        store.list_checkpoints("wordcount").unwrap(),
        vec![CheckpointId(10)]
    );
    let dead = collect_garbage(store).unwrap();
    assert_eq!(dead, vec![refs[0].at.clone().unwrap().segment]);
    let err = store.get_chunk(refs[0].loc()).unwrap_err();
    assert!(matches!(err, StoreError::MissingChunk { .. }), "{err}");
    assert!(err.to_string().contains(&refs[0].chunk.hex()), "{err}");
}

#[test]
fn filesystem_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = CheckpointStore::open_dir(&dir.path().join("store")).unwrap();
    exercise(&store);
    let refs = commit(&store, 11, &[b"state"]);
    let seg = refs[0].at.clone().unwrap().segment;
    let file = dir.path().join("store").join(&seg);
    std::fs::write(&file, b"stale").unwrap();
    let err = store.get_chunk(refs[0].loc()).unwrap_err().to_string();
    assert!(
        err.contains(&file.display().to_string()) && err.contains("corrupt"),
        "{err}"
    );
    std::fs::write(&file, b"st").unwrap();
    let err = messages(&store.get_chunk(refs[0].loc()).unwrap_err());
    assert!(
        err[0].contains("cannot read") && err[0].contains(&seg),
        "truncated: {err:?}"
    );
    let mpath = dir.path().join("store/jobs/wordcount/checkpoints/10.json");
    std::fs::write(&mpath, b"{\"format\": 1").unwrap();
    let err = messages(
        &store
            .get_manifest("wordcount", CheckpointId(10))
            .unwrap_err(),
    );
    assert!(err[0].ends_with("10.json is unreadable"), "{err:?}");
    assert!(
        err[1].contains("EOF while parsing"),
        "the JSON error is the cause: {err:?}"
    );
}

#[test]
fn memory_store_corruption_and_a_full_disk() {
    let blobs = Arc::new(MemBlobs::default());
    let store = CheckpointStore::memory(blobs.clone());
    exercise(&store);
    blobs.fail_writes(true);
    let txn = begin(&store);
    txn.put_chunk(b"new").unwrap();
    let err = messages(&txn.put_manifest(&manifest(20, &[])).unwrap_err());
    assert!(
        err[0].starts_with("cannot write memory:segments/"),
        "{err:?}"
    );
    assert_eq!(
        err[1], "no space left on device",
        "the I/O error is the cause, not part of the message"
    );
    drop(txn);
    assert!(
        store.get_manifest("wordcount", CheckpointId(20)).is_err(),
        "no manifest without its segments"
    );
    blobs.fail_writes(false);
    let refs = commit(&store, 21, &[b"new"]);
    blobs.overwrite(&refs[0].at.clone().unwrap().segment, b"old".to_vec());
    assert!(matches!(
        store.get_chunk(refs[0].loc()),
        Err(StoreError::Corrupt { .. })
    ));
}

fn pin(id: &str, m: CheckpointManifest) -> Pin {
    Pin {
        format: PIN_FORMAT,
        savepoint: id.into(),
        registry: "/somewhere/else".into(),
        memory: false,
        checkpoint: m,
    }
}

/// A savepoint's chunks stay whatever registry holds its record: the pin
/// is in the store, and every collection reads every pin.
#[test]
fn pins_keep_their_segments() {
    let store = CheckpointStore::in_memory();
    let txn = begin(&store);
    let (a, _) = txn.put_chunk(b"pinned").unwrap();
    txn.put_pin(&pin("sp-other-1-ab", manifest(1, std::slice::from_ref(&a))))
        .unwrap();
    drop(txn);
    let txn = begin(&store);
    let (dead, _) = txn.put_chunk(b"dead").unwrap();
    txn.flush().unwrap();
    drop(txn);
    let b = commit(&store, 2, &[b"referenced"]);
    let seg = |r: &ChunkRef| r.at.clone().unwrap().segment;
    assert_eq!(collect_garbage(&store).unwrap(), vec![seg(&dead)]);
    assert_eq!(store.list_pins().unwrap().len(), 1);
    let again = begin(&store)
        .put_pin(&pin("sp-other-1-ab", manifest(1, &[])))
        .unwrap_err();
    assert!(matches!(again, StoreError::Exists { .. }));
    store.delete_pin("sp-other-1-ab").unwrap();
    assert_eq!(collect_garbage(&store).unwrap(), vec![seg(&a)]);
    store.get_chunk(b[0].loc()).unwrap();
    assert!(
        store.delete_pin("../x").is_err(),
        "a pin name is a savepoint name"
    );
}

#[test]
fn collection_keeps_what_open_transactions_hold() {
    let store = CheckpointStore::in_memory();
    let txn = begin(&store);
    let (h, _) = txn.put_chunk(b"in flight").unwrap();
    txn.flush().unwrap();
    assert!(
        collect_garbage(&store).unwrap().is_empty(),
        "written, not committed, held"
    );
    txn.put_manifest(&manifest(1, std::slice::from_ref(&h)))
        .unwrap();
    drop(txn);
    // A segment an earlier checkpoint wrote, referenced again by one in
    // flight after the earlier manifest was deleted.
    let txn = begin(&store);
    txn.reuse(h.loc());
    store.delete_manifest("wordcount", CheckpointId(1)).unwrap();
    assert!(collect_garbage(&store).unwrap().is_empty());
    txn.put_manifest(&manifest(2, std::slice::from_ref(&h)))
        .unwrap();
    drop(txn);
    assert!(collect_garbage(&store).unwrap().is_empty());
    store.get_chunk(h.loc()).unwrap();
}

#[test]
fn segments_released_during_a_collection_are_kept_by_it() {
    let store = CheckpointStore::in_memory();
    store.held.lock().unwrap().collections += 1;
    let txn = begin(&store);
    let (h, _) = txn.put_chunk(b"x").unwrap();
    txn.flush().unwrap();
    drop(txn); // released, never committed, while "a collection runs"
    let started = SystemTime::now();
    assert!(
        collect(&store, started).unwrap().is_empty(),
        "a collection that listed before the release must not delete it"
    );
    store.held.lock().unwrap().collections -= 1;
    store.held.lock().unwrap().released.clear();
    assert_eq!(
        collect_garbage(&store).unwrap(),
        vec![h.at.unwrap().segment]
    );
}

#[test]
fn the_grace_period_keeps_young_objects_and_refuses_late_commits() {
    let blobs = Arc::new(MemBlobs::default());
    let store = CheckpointStore::new(blobs.clone(), Duration::from_secs(600));
    let txn = begin(&store);
    txn.put_chunk(b"another node's commit in flight").unwrap();
    txn.flush().unwrap();
    drop(txn);
    assert!(
        collect_garbage(&store).unwrap().is_empty(),
        "younger than grace"
    );
    blobs.age(Duration::from_secs(601));
    assert_eq!(collect_garbage(&store).unwrap().len(), 1);

    let strict = CheckpointStore::new(blobs, Duration::from_nanos(1));
    let txn = begin(&strict);
    txn.put_chunk(b"slow").unwrap();
    let err = txn.put_manifest(&manifest(1, &[])).unwrap_err();
    assert!(matches!(err, StoreError::TooSlow { .. }), "{err}");
    assert!(err.to_string().contains("grace period"), "{err}");
}

#[test]
fn format_1_manifests_and_chunk_objects_are_still_read() {
    let blobs = Arc::new(MemBlobs::default());
    let store = CheckpointStore::memory(blobs.clone());
    let chunk = ChunkHash::of(b"old state");
    let key = legacy_chunk_key(&chunk);
    blobs
        .put_if_absent(&key, Bytes::from_static(b"old state"))
        .unwrap();
    let mut m = manifest(
        4,
        &[ChunkRef {
            chunk,
            bytes: 9,
            at: None,
        }],
    );
    m.format = 1;
    blobs
        .put_if_absent(
            "jobs/wordcount/checkpoints/4.json",
            Bytes::from(serde_json::to_vec(&m).unwrap()),
        )
        .unwrap();
    let read = store.get_manifest("wordcount", CheckpointId(4)).unwrap();
    let loc = read.chunks().next().unwrap();
    assert_eq!(&store.get_chunk(loc).unwrap()[..], b"old state");
    assert!(collect_garbage(&store).unwrap().is_empty());
    store.delete_manifest("wordcount", CheckpointId(4)).unwrap();
    assert_eq!(collect_garbage(&store).unwrap(), vec![key]);
    m.format = 9;
    blobs
        .put_if_absent(
            "jobs/wordcount/checkpoints/5.json",
            Bytes::from(
                serde_json::to_vec(&{
                    let mut m = m.clone();
                    m.id = CheckpointId(5);
                    m
                })
                .unwrap(),
            ),
        )
        .unwrap();
    let err = store
        .get_manifest("wordcount", CheckpointId(5))
        .unwrap_err()
        .to_string();
    assert!(err.contains("format 9") && err.contains("[1, 2]"), "{err}");
}

#[test]
fn bad_job_names_never_become_keys() {
    let store = CheckpointStore::in_memory();
    for bad in ["../../x", "/etc", "a/b", ".."] {
        let err = messages(&store.list_checkpoints(bad).unwrap_err());
        assert!(err[0].contains("is unreadable"), "{err:?}");
        assert!(
            err[1].contains("invalid job name"),
            "the name error is the cause: {err:?}"
        );
        assert!(store.get_manifest(bad, CheckpointId(1)).is_err());
    }
}

#[test]
fn many_chunks_are_read_a_segment_at_a_time_in_the_order_asked() {
    let blobs = Arc::new(MemBlobs::default());
    let store = CheckpointStore::memory(blobs.clone());
    let a = commit(&store, 1, &[b"one", b"two", b"three"]);
    let b = commit(&store, 2, &[b"four"]);
    let legacy = ChunkHash::of(b"old");
    blobs
        .put_if_absent(&legacy_chunk_key(&legacy), Bytes::from_static(b"old"))
        .unwrap();
    let old = ChunkRef {
        chunk: legacy,
        bytes: 3,
        at: None,
    };
    let want = [b[0].loc(), a[2].loc(), old.loc(), a[0].loc()];
    let got: Vec<Vec<u8>> = store
        .get_chunks(&want)
        .unwrap()
        .iter()
        .map(|b| b.to_vec())
        .collect();
    assert_eq!(got, [&b"four"[..], b"three", b"old", b"one"]);
    store.verify_chunks(want).unwrap();
    let seg = a[1].at.clone().unwrap().segment;
    blobs.overwrite(&seg, b"oneTWOthree".to_vec());
    let err = store.get_chunks(&[a[0].loc(), a[1].loc()]).unwrap_err();
    assert!(
        matches!(&err, StoreError::Corrupt { chunk, .. } if *chunk == a[1].chunk.hex()),
        "{err}"
    );
    assert!(store.verify_chunks([a[1].loc()]).is_err());
}

/// A savepoint registered, its checkpoint superseded and retired while a
/// collection runs between its listing of manifests and of pins (in
/// either order): the collection sees the manifest or the pin, and the
/// savepoint keeps every chunk.
#[test]
fn a_pin_made_while_a_collection_runs_keeps_its_segments() {
    let blobs = Arc::new(MemBlobs::default());
    let store = Arc::new(CheckpointStore::memory(blobs.clone()));
    let n = commit(&store, 1, &[b"state of checkpoint 1"]);
    let m = store.get_manifest("wordcount", CheckpointId(1)).unwrap();
    let first: Arc<Mutex<Option<String>>> = Arc::default();
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (s, f, d) = (store.clone(), first.clone(), done.clone());
    blobs.before_list(Box::new(move |prefix: &str| {
        let top = prefix.split('/').next().unwrap_or_default().to_string();
        let mut first = f.lock().unwrap();
        let seen = first.get_or_insert_with(|| top.clone()).clone();
        if seen == top || d.swap(true, std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        drop(first);
        // Between the collection's two listings: the savepoint's pin,
        // the next checkpoint, and retention of the first.
        begin(&s)
            .put_pin(&pin("sp-wordcount-1-aa", m.clone()))
            .unwrap();
        commit(&s, 2, &[b"state of checkpoint 2"]);
        s.delete_manifest("wordcount", CheckpointId(1)).unwrap();
    }));
    collect_garbage(&store).unwrap();
    assert!(
        done.load(std::sync::atomic::Ordering::SeqCst),
        "the hook ran"
    );
    store
        .get_chunk(n[0].loc())
        .expect("the savepoint's chunk survives the collection");
}
