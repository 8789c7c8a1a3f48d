//! The metadata log storage's tests: persistence across reopen, torn tails, corruption,
//! truncate and purge on disk, memory mode, the flush callback's timing, openraft's own
//! storage suite, and a single-node `Raft` restarted on the same directory.

use std::collections::BTreeMap;
use std::io::Cursor;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::error::{InstallSnapshotError, RPCError, RaftError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::storage::{RaftLogStorageExt, RaftStateMachine, Snapshot};
use openraft::testing::{StoreBuilder, Suite};
use openraft::{
    BasicNode, EntryPayload, RaftSnapshotBuilder, ServerState, SnapshotMeta, StoredMembership,
};
use serde::{Deserialize, Serialize};

use super::*;
use crate::meta::{MetaBatch, MetaRecord, MetaReply};

fn log_id(term: u64, index: u64) -> LogId {
    openraft::testing::log_id(term, 1, index)
}

fn batch(i: u64) -> MetaBatch {
    MetaBatch {
        records: vec![MetaRecord::ClusterId {
            id: format!("cluster-{i}"),
        }],
    }
}

fn entry(term: u64, index: u64) -> Entry {
    Entry {
        log_id: log_id(term, index),
        payload: EntryPayload::Normal(batch(index)),
    }
}

fn entries(term: u64, indexes: std::ops::RangeInclusive<u64>) -> Vec<Entry> {
    indexes.map(|i| entry(term, i)).collect()
}

async fn all(store: &mut LogStore) -> Vec<Entry> {
    store.try_get_log_entries(..).await.unwrap()
}

fn indexes(entries: &[Entry]) -> Vec<u64> {
    entries.iter().map(|e| e.log_id.index).collect()
}

fn segment_files(raft_dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(raft_dir.join("log"))
        .unwrap()
        .map(|d| d.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    files.sort();
    files
}

fn raft_dir(tmp: &tempfile::TempDir) -> PathBuf {
    tmp.path().join("meta").join("raft")
}

/// Opens, runs `f`, waits for the writer, drops the store.
async fn with_store<F, Fut>(dir: &Path, segment_bytes: u64, f: F)
where
    F: FnOnce(LogStore) -> Fut,
    Fut: std::future::Future<Output = LogStore>,
{
    let store = LogStore::open_with_segment_bytes(Some(dir), segment_bytes).unwrap();
    let store = f(store).await;
    store.sync().await.unwrap();
}

#[tokio::test]
async fn append_and_reopen_return_the_same_entries_vote_and_committed() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = raft_dir(&tmp);
    let vote = Vote::new_committed(3, 1);
    with_store(&dir, SEGMENT_BYTES, |mut s| async move {
        assert!(s.is_pristine());
        s.blocking_append(entries(1, 1..=3)).await.unwrap();
        s.blocking_append(entries(2, 4..=5)).await.unwrap();
        s.save_vote(&vote).await.unwrap();
        s.save_committed(Some(log_id(2, 4))).await.unwrap();
        s
    })
    .await;
    assert!(dir.join("vote").is_file() && dir.join("committed").is_file());
    assert_eq!(segment_files(&dir).len(), 1);
    assert!(segment_files(&dir)[0].ends_with("log/00000000000000000001.seg"));

    let mut s = LogStore::open(Some(&dir)).unwrap();
    assert!(!s.is_pristine());
    let got = all(&mut s).await;
    let mut want = entries(1, 1..=3);
    want.extend(entries(2, 4..=5));
    assert_eq!(got, want);
    assert_eq!(s.read_vote().await.unwrap(), Some(vote));
    assert_eq!(s.read_committed().await.unwrap(), Some(log_id(2, 4)));
    let state = s.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id, None);
    assert_eq!(state.last_log_id, Some(log_id(2, 5)));
    // Ranges the reader is asked for.
    assert_eq!(indexes(&s.try_get_log_entries(2..4).await.unwrap()), [2, 3]);
    assert_eq!(
        indexes(&s.try_get_log_entries(4..=9).await.unwrap()),
        [4, 5]
    );
    assert!(s.try_get_log_entries(3..3).await.unwrap().is_empty());
    #[allow(clippy::reversed_empty_ranges)] // on purpose: must not panic
    let backwards = 4..2;
    assert!(s.try_get_log_entries(backwards).await.unwrap().is_empty());
    assert!(s
        .try_get_log_entries((Bound::Excluded(3), Bound::Excluded(4)))
        .await
        .unwrap()
        .is_empty());
    // Appending after a reopen continues the same segment.
    s.blocking_append(entries(2, 6..=6)).await.unwrap();
    s.sync().await.unwrap();
    drop(s);
    let mut s = LogStore::open(Some(&dir)).unwrap();
    assert_eq!(indexes(&all(&mut s).await), [1, 2, 3, 4, 5, 6]);
    assert_eq!(segment_files(&dir).len(), 1);
}

#[tokio::test]
async fn an_appended_entry_is_readable_at_once_and_flushed_only_after_the_write() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = raft_dir(&tmp);
    let store = LogStore::open(Some(&dir)).unwrap();
    let release = store.hold_writer();
    let mut appender = store.clone();
    let append = tokio::spawn(async move {
        appender.blocking_append(entries(1, 1..=2)).await.unwrap();
    });
    // Readable while the writer is held...
    let mut reader = store.clone();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while all(&mut reader).await.len() < 2 {
        assert!(tokio::time::Instant::now() < deadline, "append never ran");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // ...but not flushed: the callback waits for the writer, and nothing is on disk.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        !append.is_finished(),
        "LogFlushed completed before the write"
    );
    let on_disk: u64 = segment_files(&dir)
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();
    assert_eq!(on_disk, 0);
    drop(release);
    tokio::time::timeout(Duration::from_secs(5), append)
        .await
        .unwrap()
        .unwrap();
    let on_disk = std::fs::metadata(&segment_files(&dir)[0]).unwrap().len();
    let payloads: usize = entries(1, 1..=2)
        .iter()
        .map(|e| FRAME_HEADER + serde_json::to_vec(e).unwrap().len())
        .sum();
    assert_eq!(on_disk, payloads as u64);
}

#[tokio::test]
async fn the_writer_thread_is_named_and_stops_with_the_last_clone() {
    let tmp = tempfile::tempdir().unwrap();
    let store = LogStore::open(Some(&raft_dir(&tmp))).unwrap();
    let attached = store.attach_to_writer();
    let name = attached.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(name, "ottla-meta-io");
    let mut clone = store.clone();
    drop(store);
    // A clone keeps it running.
    clone.blocking_append(entries(1, 1..=1)).await.unwrap();
    assert_eq!(
        attached.recv_timeout(Duration::from_millis(50)),
        Err(mpsc::RecvTimeoutError::Timeout)
    );
    drop(clone);
    assert_eq!(
        attached.recv_timeout(Duration::from_secs(5)),
        Err(mpsc::RecvTimeoutError::Disconnected),
        "the thread exits once the last clone is gone"
    );
}

#[tokio::test]
async fn a_torn_tail_is_cut_on_reopen_and_earlier_entries_survive() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = raft_dir(&tmp);
    with_store(&dir, SEGMENT_BYTES, |mut s| async move {
        s.blocking_append(entries(1, 1..=4)).await.unwrap();
        s
    })
    .await;
    let seg = segment_files(&dir)[0].clone();
    let full = std::fs::metadata(&seg).unwrap().len();

    // Garbage after the last entry.
    {
        let mut f = std::fs::OpenOptions::new().append(true).open(&seg).unwrap();
        f.write_all(&[0xde, 0xad, 0xbe, 0xef, 0, 1, 2]).unwrap();
    }
    let mut s = LogStore::open(Some(&dir)).unwrap();
    assert_eq!(indexes(&all(&mut s).await), [1, 2, 3, 4]);
    assert_eq!(std::fs::metadata(&seg).unwrap().len(), full, "garbage cut");
    drop(s);

    // The last entry half written.
    let last_len = FRAME_HEADER as u64 + serde_json::to_vec(&entry(1, 4)).unwrap().len() as u64;
    {
        let f = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
        f.set_len(full - last_len / 2).unwrap();
    }
    let mut s = LogStore::open(Some(&dir)).unwrap();
    assert_eq!(indexes(&all(&mut s).await), [1, 2, 3]);
    assert_eq!(std::fs::metadata(&seg).unwrap().len(), full - last_len);
    // The log goes on from the cut.
    s.blocking_append(vec![entry(2, 4)]).await.unwrap();
    s.sync().await.unwrap();
    drop(s);
    let mut s = LogStore::open(Some(&dir)).unwrap();
    let got = all(&mut s).await;
    assert_eq!(indexes(&got), [1, 2, 3, 4]);
    assert_eq!(got[3], entry(2, 4));
}

#[tokio::test]
async fn a_bad_crc_in_the_last_segment_cuts_from_there() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = raft_dir(&tmp);
    with_store(&dir, SEGMENT_BYTES, |mut s| async move {
        s.blocking_append(entries(1, 1..=4)).await.unwrap();
        s
    })
    .await;
    let seg = segment_files(&dir)[0].clone();
    let mut data = std::fs::read(&seg).unwrap();
    let third = 2 * (FRAME_HEADER + serde_json::to_vec(&entry(1, 1)).unwrap().len());
    data[third + FRAME_HEADER + 3] ^= 0x20;
    std::fs::write(&seg, &data).unwrap();
    let mut s = LogStore::open(Some(&dir)).unwrap();
    assert_eq!(indexes(&all(&mut s).await), [1, 2]);
    assert_eq!(std::fs::metadata(&seg).unwrap().len(), third as u64);
}

#[tokio::test]
async fn corruption_in_an_earlier_segment_refuses_to_open() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = raft_dir(&tmp);
    with_store(&dir, 200, |mut s| async move {
        for i in 1..=12 {
            s.blocking_append(vec![entry(1, i)]).await.unwrap();
        }
        s
    })
    .await;
    let segs = segment_files(&dir);
    assert!(segs.len() >= 3, "{segs:?}");
    let mut data = std::fs::read(&segs[0]).unwrap();
    let second = FRAME_HEADER + serde_json::to_vec(&entry(1, 1)).unwrap().len();
    data[second + FRAME_HEADER + 5] ^= 0x01;
    std::fs::write(&segs[0], &data).unwrap();
    let err = LogStore::open(Some(&dir)).err().expect("refuses to open");
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    let msg = err.to_string();
    assert!(
        msg.contains("CRC mismatch") && msg.contains("not the last"),
        "{msg}"
    );
    // Nothing was cut.
    assert_eq!(std::fs::read(&segs[0]).unwrap(), data);
}

#[tokio::test]
async fn truncate_is_durable_and_survives_reopen() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = raft_dir(&tmp);
    let mut s = LogStore::open_with_segment_bytes(Some(&dir), 200).unwrap();
    for i in 1..=10 {
        s.blocking_append(vec![entry(1, i)]).await.unwrap();
    }
    let before = segment_files(&dir);
    assert!(before.len() >= 3, "{before:?}");
    // Into the middle of a segment: later segments go, that one is cut.
    s.truncate(log_id(1, 5)).await.unwrap();
    assert_eq!(indexes(&all(&mut s).await), [1, 2, 3, 4]);
    // Durable already: a second open (while this store lives) sees the cut.
    {
        let mut other = LogStore::open(Some(&dir)).unwrap();
        assert_eq!(indexes(&all(&mut other).await), [1, 2, 3, 4]);
    }
    s.blocking_append(entries(2, 5..=6)).await.unwrap();
    // At a segment's first entry: that segment goes whole.
    let second_first: u64 = segment_files(&dir)[1]
        .file_stem()
        .and_then(|n| n.to_str())
        .and_then(|n| n.parse().ok())
        .unwrap();
    s.truncate(log_id(1, second_first)).await.unwrap();
    s.sync().await.unwrap();
    drop(s);
    assert_eq!(segment_files(&dir).len(), 1);
    let mut s = LogStore::open_with_segment_bytes(Some(&dir), 200).unwrap();
    let want: Vec<u64> = (1..second_first).collect();
    assert_eq!(indexes(&all(&mut s).await), want);
    assert_eq!(
        s.get_log_state().await.unwrap().last_log_id,
        Some(log_id(1, second_first - 1))
    );
    // Truncating everything.
    s.truncate(log_id(1, 1)).await.unwrap();
    assert!(all(&mut s).await.is_empty());
    assert_eq!(s.get_log_state().await.unwrap().last_log_id, None);
    s.blocking_append(entries(3, 1..=2)).await.unwrap();
    s.sync().await.unwrap();
    drop(s);
    let mut s = LogStore::open(Some(&dir)).unwrap();
    assert_eq!(all(&mut s).await, entries(3, 1..=2));
}

#[tokio::test]
async fn purge_deletes_whole_segments_and_reopen_reports_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = raft_dir(&tmp);
    let mut s = LogStore::open_with_segment_bytes(Some(&dir), 200).unwrap();
    for i in 1..=12 {
        s.blocking_append(vec![entry(1, i)]).await.unwrap();
    }
    let firsts = |dir: &Path| -> Vec<u64> {
        segment_files(dir)
            .iter()
            .map(|p| p.file_stem().unwrap().to_str().unwrap().parse().unwrap())
            .collect()
    };
    let before = firsts(&dir);
    assert!(before.len() >= 3, "{before:?}");
    // Up to one before the third segment's first entry: the first two go whole, the third
    // stays whole (it holds nothing purged yet).
    let upto = before[2] - 1;
    s.purge(log_id(1, upto)).await.unwrap();
    assert_eq!(firsts(&dir), before[2..]);
    let state = s.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id, Some(log_id(1, upto)));
    assert_eq!(state.last_log_id, Some(log_id(1, 12)));
    assert_eq!(
        indexes(&all(&mut s).await),
        (upto + 1..=12).collect::<Vec<_>>()
    );
    // Into the middle of a segment: it stays on disk, its purged entries are not served.
    s.purge(log_id(1, upto + 1)).await.unwrap();
    assert_eq!(firsts(&dir), before[2..]);
    s.sync().await.unwrap();
    drop(s);

    let mut s = LogStore::open_with_segment_bytes(Some(&dir), 200).unwrap();
    let state = s.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id, Some(log_id(1, upto + 1)));
    assert_eq!(state.last_log_id, Some(log_id(1, 12)));
    assert_eq!(
        indexes(&all(&mut s).await),
        (upto + 2..=12).collect::<Vec<_>>()
    );
    // Past the end (a snapshot from the leader): everything goes, the log goes on after it.
    s.purge(log_id(2, 20)).await.unwrap();
    assert!(segment_files(&dir).is_empty());
    let state = s.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id, Some(log_id(2, 20)));
    assert_eq!(state.last_log_id, Some(log_id(2, 20)));
    s.blocking_append(vec![entry(2, 21)]).await.unwrap();
    // A hole is refused.
    assert!(s.blocking_append(vec![entry(2, 23)]).await.is_err());
    s.sync().await.unwrap();
    drop(s);
    let mut s = LogStore::open(Some(&dir)).unwrap();
    let state = s.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id, Some(log_id(2, 20)));
    assert_eq!(state.last_log_id, Some(log_id(2, 21)));
    assert_eq!(all(&mut s).await, vec![entry(2, 21)]);
}

#[tokio::test]
async fn memory_mode_keeps_the_same_semantics_without_files() {
    let mut s = LogStore::open(None).unwrap();
    assert!(s.is_pristine());
    s.blocking_append(entries(1, 1..=6)).await.unwrap();
    s.save_vote(&Vote::new(2, 1)).await.unwrap();
    s.save_committed(Some(log_id(1, 3))).await.unwrap();
    s.truncate(log_id(1, 5)).await.unwrap();
    s.purge(log_id(1, 2)).await.unwrap();
    s.sync().await.unwrap();
    assert_eq!(indexes(&all(&mut s).await), [3, 4]);
    let state = s.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id, Some(log_id(1, 2)));
    assert_eq!(state.last_log_id, Some(log_id(1, 4)));
    assert_eq!(s.read_vote().await.unwrap(), Some(Vote::new(2, 1)));
    assert_eq!(s.read_committed().await.unwrap(), Some(log_id(1, 3)));
    // A clone is the same log.
    let mut c = s.get_log_reader().await;
    assert_eq!(indexes(&all(&mut c).await), [3, 4]);
    s.purge(log_id(1, 9)).await.unwrap();
    assert!(all(&mut c).await.is_empty());
    assert_eq!(
        s.get_log_state().await.unwrap().last_log_id,
        Some(log_id(1, 9))
    );
}

#[tokio::test]
async fn a_replaced_vote_survives_reopen() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = raft_dir(&tmp);
    with_store(&dir, SEGMENT_BYTES, |mut s| async move {
        s.save_vote(&Vote::new(1, 1)).await.unwrap();
        s.blocking_append(entries(1, 1..=1)).await.unwrap();
        s.save_vote(&Vote::new(2, 3)).await.unwrap();
        s
    })
    .await;
    let mut s = LogStore::open(Some(&dir)).unwrap();
    assert_eq!(s.read_vote().await.unwrap(), Some(Vote::new(2, 3)));
    let text = std::fs::read_to_string(dir.join("vote")).unwrap();
    assert!(
        text.contains("leader_id") && text.contains("committed"),
        "{text}"
    );
}

// ---------------------------------------------------------------------------------------
// A trivial state machine, for openraft's suite and a real Raft.

#[derive(Clone, Default, Serialize, Deserialize)]
struct SmData {
    last_applied: Option<LogId>,
    membership: StoredMembership<u64, BasicNode>,
    batches: Vec<MetaBatch>,
}

/// The current snapshot: its meta and bytes.
type StoredSnapshot = Option<(SnapshotMeta<u64, BasicNode>, Vec<u8>)>;

#[derive(Clone, Default)]
struct TestSm {
    data: Arc<Mutex<SmData>>,
    snapshot: Arc<Mutex<StoredSnapshot>>,
}

impl TestSm {
    fn batches(&self) -> Vec<MetaBatch> {
        self.data.lock().unwrap().batches.clone()
    }
}

impl RaftSnapshotBuilder<TypeConfig> for TestSm {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let (meta, bytes) = {
            let data = self.data.lock().unwrap();
            let bytes = serde_json::to_vec(&*data).unwrap();
            let meta = SnapshotMeta {
                last_log_id: data.last_applied,
                last_membership: data.membership.clone(),
                snapshot_id: format!("{:?}", data.last_applied.map(|l| l.index)),
            };
            (meta, bytes)
        };
        *self.snapshot.lock().unwrap() = Some((meta.clone(), bytes.clone()));
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(bytes)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for TestSm {
    type SnapshotBuilder = TestSm;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId>, StoredMembership<u64, BasicNode>), StorageError> {
        let data = self.data.lock().unwrap();
        Ok((data.last_applied, data.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<MetaReply>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut data = self.data.lock().unwrap();
        let mut replies = Vec::new();
        for e in entries {
            data.last_applied = Some(e.log_id);
            match e.payload {
                EntryPayload::Blank => {}
                EntryPayload::Normal(b) => data.batches.push(b),
                EntryPayload::Membership(m) => {
                    data.membership = StoredMembership::new(Some(e.log_id), m)
                }
            }
            replies.push(MetaReply {
                index: e.log_id.index,
            });
        }
        Ok(replies)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let bytes = snapshot.into_inner();
        let data: SmData = serde_json::from_slice(&bytes).unwrap();
        *self.data.lock().unwrap() = data;
        *self.snapshot.lock().unwrap() = Some((meta.clone(), bytes));
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        Ok(self
            .snapshot
            .lock()
            .unwrap()
            .clone()
            .map(|(meta, bytes)| Snapshot {
                meta,
                snapshot: Box::new(Cursor::new(bytes)),
            }))
    }
}

struct Builder {
    on_disk: bool,
}

impl StoreBuilder<TypeConfig, LogStore, TestSm, Option<tempfile::TempDir>> for Builder {
    async fn build(&self) -> Result<(Option<tempfile::TempDir>, LogStore, TestSm), StorageError> {
        let tmp = self.on_disk.then(|| tempfile::tempdir().unwrap());
        let dir = tmp.as_ref().map(raft_dir);
        // Small segments, so the suite's purges and truncations cross segment files.
        let store = LogStore::open_with_segment_bytes(dir.as_deref(), 300).unwrap();
        Ok((tmp, store, TestSm::default()))
    }
}

#[test]
fn openraft_storage_suite_on_disk() {
    Suite::test_all(Builder { on_disk: true }).unwrap();
}

#[test]
fn openraft_storage_suite_in_memory() {
    Suite::test_all(Builder { on_disk: false }).unwrap();
}

/// A network for a cluster of one: never asked for anything.
struct NoNetwork;

fn unreachable<E: std::error::Error>() -> RPCError<u64, BasicNode, E> {
    RPCError::Unreachable(Unreachable::new(&io::Error::other(
        "no network in this test",
    )))
}

impl RaftNetworkFactory<TypeConfig> for NoNetwork {
    type Network = NoNetwork;

    async fn new_client(&mut self, _target: u64, _node: &BasicNode) -> NoNetwork {
        NoNetwork
    }
}

impl RaftNetwork<TypeConfig> for NoNetwork {
    async fn append_entries(
        &mut self,
        _rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        Err(unreachable())
    }

    async fn install_snapshot(
        &mut self,
        _rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<u64>,
        RPCError<u64, BasicNode, RaftError<u64, InstallSnapshotError>>,
    > {
        Err(unreachable())
    }

    async fn vote(
        &mut self,
        _rpc: VoteRequest<u64>,
        _option: RPCOption,
    ) -> Result<VoteResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        Err(unreachable())
    }
}

async fn start_raft(store: &LogStore, sm: &TestSm) -> crate::meta::Raft {
    let config = Arc::new(
        openraft::Config {
            cluster_name: "ottla-test".into(),
            ..Default::default()
        }
        .validate()
        .unwrap(),
    );
    crate::meta::Raft::new(1, config, NoNetwork, store.clone(), sm.clone())
        .await
        .unwrap()
}

async fn wait_leader(raft: &crate::meta::Raft) {
    raft.wait(Some(Duration::from_secs(10)))
        .state(ServerState::Leader, "node 1 leads")
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_node_raft_restarts_on_the_same_log() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = raft_dir(&tmp);

    // First life: initialize, elect itself, commit two batches.
    let store = LogStore::open(Some(&dir)).unwrap();
    assert!(store.is_pristine());
    let sm = TestSm::default();
    let raft = start_raft(&store, &sm).await;
    raft.initialize(BTreeMap::from([(1u64, BasicNode::default())]))
        .await
        .unwrap();
    wait_leader(&raft).await;
    for i in 0..2 {
        let reply = raft.client_write(batch(i)).await.unwrap();
        assert_eq!(reply.data.index, reply.log_id.index);
    }
    assert_eq!(sm.batches(), [batch(0), batch(1)]);
    raft.shutdown().await.unwrap();
    drop(raft);
    store.sync().await.unwrap();
    drop(store);

    // The files hold it all.
    let mut store = LogStore::open(Some(&dir)).unwrap();
    assert!(!store.is_pristine());
    let logged: Vec<MetaBatch> = all(&mut store)
        .await
        .into_iter()
        .filter_map(|e| match e.payload {
            EntryPayload::Normal(b) => Some(b),
            _ => None,
        })
        .collect();
    assert_eq!(logged, [batch(0), batch(1)]);
    let vote = store.read_vote().await.unwrap().unwrap();
    assert!(vote.is_committed() && vote.leader_id().voted_for() == Some(1));
    let last = store.get_log_state().await.unwrap().last_log_id.unwrap();
    assert_eq!(store.read_committed().await.unwrap(), Some(last));

    // Second life on a fresh state machine: it leads again, replays the committed log and
    // goes on; initialize is refused (not pristine).
    let sm = TestSm::default();
    let raft = start_raft(&store, &sm).await;
    wait_leader(&raft).await;
    assert!(raft
        .initialize(BTreeMap::from([(1u64, BasicNode::default())]))
        .await
        .is_err());
    raft.client_write(batch(2)).await.unwrap();
    assert_eq!(sm.batches(), [batch(0), batch(1), batch(2)]);
    raft.shutdown().await.unwrap();
    drop(raft);
    store.sync().await.unwrap();
    drop(store);

    let mut store = LogStore::open(Some(&dir)).unwrap();
    let normal = all(&mut store)
        .await
        .into_iter()
        .filter(|e| matches!(e.payload, EntryPayload::Normal(_)))
        .count();
    assert_eq!(normal, 3);
}
