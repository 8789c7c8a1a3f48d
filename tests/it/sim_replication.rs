//! A deterministic simulation of replication: the controller's leadership decisions and the
//! follower-pull protocol of one partition (replicas [1, 2, 3], `min.insync.replicas` 2,
//! acks=all producers, unclean election off) under crashes, pauses, network partitions,
//! delays and clock jumps, driven by a seed. No threads, no sleeps, no tokio: one event
//! queue in simulated microseconds, ordered by (time, scheduling order); every random choice
//! comes from a splitmix64 generator seeded by the seed, so a seed replays exactly.
//!
//! **Real code, called as is:** the metadata image and records (`MetadataImage::apply` makes
//! every controller decision a log entry; leader and partition epochs are bumped by it);
//! `election::{on_fence, on_unfence, elect, rebalance}` for every leadership decision
//! (fencing on session expiry, on a refused connection a follower reports and the controller
//! confirms, on a new registration; unfencing; ElectLeaders; automatic rebalancing);
//! `reassign::{reassign, complete_if_caught_up}` (reorders of the replicas); `EpochCache` as
//! every replica's leader-epoch cache (`assign` on every append and when a replica becomes
//! leader, `end_offset_for_leader` to answer a fetch's last epoch, `end_offset_for` and
//! `truncate_from_end` to truncate, the loader's re-assign and cut on restart); and
//! `fetcher::truncation_point`.
//!
//! **Modelled, after the code it names (it can drift from it):** a replica's log is a
//! `Vec` of batches (base, last offset, leader epoch, a payload id unique to the producer's
//! batch), with `PartitionLog::truncate_to`'s cut (the batch holding the offset goes),
//! `append_as_follower`'s offset check, and reads of whole batches from a fetch offset.
//! `TopicRegistry::open_partition` (the high watermark restored from the broker's
//! high-watermark checkpoint, clamped to the log, then `Partition::new`: only a leader alone
//! in its ISR moves it to its log end) and `checkpoint_high_watermarks` (written by the
//! maintenance timer every 5 s). `Partition`'s `set_leadership` (a leadership change wakes
//! the replication waits), `follower_fetched`, `maybe_advance_high_watermark` (the
//! leader's HW = the smallest log end over its ISR, a member that has not fetched under this
//! leadership holding it; alone in its ISR the HW follows the log end; it never goes down)
//! and `wanted_isr` (shrink on `replica_lag_time_max_ms` by the broker's clock, expand when
//! caught up), one AlterPartition in flight. `handlers/fetch.rs` for follower fetches: the
//! leader-epoch checks, `diverging_epoch` (the same `EpochCache` calls), progress not counted
//! from a diverging fetch, the 500 ms long poll woken by appends. `fetcher.rs`: one fetcher
//! per leader (started and stopped as each image changes), fetch offset = log end,
//! `last_fetched_epoch` = the cache's newest epoch (as the fetcher sends it), answers dropped
//! after a leader-epoch change, DIVERGING_EPOCH and OFFSET_OUT_OF_RANGE handling, the 100 ms
//! to 1 s backoff, the report of a refused leader. `handlers/produce.rs` with acks=all:
//! NOT_ENOUGH_REPLICAS below `min.insync.replicas`, a duplicate of one of the producer's
//! last batches answered at its first offset, and `wait_replicated` (woken by high watermark
//! advances and leadership changes, then: still leader at the leader epoch the batch was
//! appended at? HW past the batch? ISR still big enough?); a replica that does not lead
//! refuses the append (checked in the same event as the append, as the real code does it
//! atomically with a demotion). `controller.rs`: AlterPartition's checks (leader, leader
//! and partition epochs, broker epoch, joiners unfenced) — repeated here because a
//! `Controller` needs Raft —, heartbeats (unfence once caught up), registrations (fencing
//! the old one), the confirmation probe of a reported broker (refused only by a dead
//! process: a starting one has bound its listener), `fencing_loop` on
//! `broker_session_timeout_ms`. `broker.rs`: the start
//! (catch up with the metadata log, open the logs from the image, register, then serve:
//! requests that reach the bound listener before wait), the heartbeat loop (registering
//! again on a stale epoch) and `MetaNode::submit` (forwarded, retried until 10 s, then the
//! wait for the local image). The Raft quorum is one reliable controller node with a
//! linearizable log; each broker receives "committed up to N" after every entry and every
//! 100 ms over the same faulty network, and applies the entries one by one, in order.
//!
//! **Faults** (a schedule drawn per seed, with per-seed weights, timeouts and delays):
//! kill -9 (the log stays: the page cache survives; the restart reloads it, the cache is
//! re-assigned from the batches, the high watermark comes from the checkpoint as last
//! written, up to 5 s old), pause (SIGSTOP: timers and arriving messages wait),
//! a broker cut off from every other node, one link cut (e.g. a broker from the controller
//! only), extra delay on a node's messages (delays are drawn per message, so messages
//! overtake each other; a message whose link is down when sent or when due is lost), a jump
//! of a broker's wall clock (its ISR lag checks), a jump of the controller's session clock,
//! ElectLeaders, reassignments to a new replica order, and, only with
//! `OTTLA_SIM_POWER_LOSS=1`, power losses (the tail not flushed by a periodic flush is lost,
//! the high-watermark checkpoint, fsynced, is not; off by default because losing
//! acknowledged records is then expected, as in Kafka without fsync: invariants 1 and 2
//! count anomalies instead). At the end everything heals, killed brokers restart,
//! producers stop making new batches, and the run goes on until the replicas converge (one
//! leader, ISR of three, identical logs, HW = log end everywhere).
//!
//! **Invariants**, checked after every event (a failure reports the seed, its schedule and
//! the trace, and is replayed to check that it replays identically):
//! 1. every acknowledged batch is, at its offset with its payload, in the log of the leader
//!    the controller names (whenever there is one), and in every log once converged;
//!    1b. the same for every batch some serving leader had below its HW (consumers could
//!    have read it), and no two such batches at one offset;
//! 2. no two replicas hold different batches below the smaller of their HWs; identical logs
//!    once converged;
//! 3. HW ≤ log end on every replica; a leader's HW never goes down within its leader epoch;
//! 4. the ISR is never empty, the leader is in it, and an election (leader change) picks a
//!    member of the previous ISR that is alive;
//! 5. leader and partition epochs only grow, at the controller and on every broker, and a
//!    leader change always brings a new leader epoch.
//!
//! **Bugs found, all three fixed** (see `Options`): (1) a restarted replica took its log
//! end as its high watermark (fixed: the high-watermark checkpoint); (2) the high watermark
//! ignored the replicas an ISR expansion in flight adds (fixed: KIP-497's maximal ISR);
//! (3) an acks=all wait missed a demotion and a new leadership (fixed: the wait holds the
//! leader epoch of its append, and a leadership change wakes it). The model follows the
//! fixed code; `OTTLA_SIM_OLD=restart_hw,isr_expansion,produce_wait,long_poll` (or `all`) brings back
//! the behaviour before each fix, and the `old_bug_*_is_caught` tests replay, each with its
//! switch on, a seed that the checker fails, so that the checker keeps catching those bugs.
//!
//! A fourth, found once the model had those fixes (3 seeds in 100,000), is fixed too: (4) a
//! follower's fetch parked at its leader was answered after that leader's demotion, with
//! what it had appended since as a follower (fixed: every fetch read is checked against the
//! request's leader epoch once done; `OTTLA_SIM_OLD=long_poll`, `old_bug_long_poll_is_caught`).
//!
//! **Not modelled:** Raft itself (controller failover, a minority controller, lost entries),
//! controlled shutdown and clean stops (and so the checkpoint a clean stop writes), more
//! than one partition or topic, log start offsets (retention, DeleteRecords,
//! `truncate_fully_and_start_at`), reassignments that change the replica set, unclean
//! election (only as a check of the checker), KIP-966, transactions and control batches,
//! producer sequence numbers beyond duplicate detection (no OUT_OF_ORDER_SEQUENCE, no epoch
//! bump after a give-up), fetch sizes in bytes (a batch count stands in), segment files,
//! fsync and torn writes (power loss drops whole batches), consumers, TCP (connections,
//! ordering, retransmission: a lost request or answer is waited out to its timeout), the
//! coordinators, and time spent computing.
//!
//! Runs: `cargo test --release --test sim_replication` runs 2,000 seeds; `OTTLA_SIM_SEEDS=N`
//! more; `OTTLA_SIM_SEED=S` replays one and prints its parameters, schedule and trace; with
//! `OTTLA_SIM_OLD=...` (above) either runs with old bugs back.

use std::cmp::Ordering as CmpOrdering;
use std::collections::{BTreeMap, BinaryHeap};
use std::fmt::Write as _;
use std::sync::Arc;

use ottla::cluster::fetcher::truncation_point;
use ottla::log::epoch_cache::EpochCache;
use ottla::meta::election::{self, ElectionType, Rules, NO_LEADER};
use ottla::meta::image::{Delta, MetadataImage, PartitionImage};
use ottla::meta::reassign;
use ottla::meta::records::{Endpoint, MetaRecord};
use uuid::Uuid;

// ---------------------------------------------------------------------------------------
// Constants: the real code's, where it has one (copied: most are private there).
// ---------------------------------------------------------------------------------------

/// Simulated time is in microseconds.
const MS: u64 = 1_000;
const SEC: u64 = 1_000_000;
const BROKERS: [i32; 3] = [1, 2, 3];
const MIN_INSYNC: usize = 2;

/// The controller's election rules: Kafka 4.1's, with eligible leader replicas (KIP-966),
/// unless `OTTLA_SIM_NO_ELR=1` (the rules before it: the ISR keeps its last member).
fn rules(opts: &Options) -> Rules {
    Rules {
        elr: !opts.no_elr,
        default_min_insync: MIN_INSYNC,
    }
}

/// `Leadership::commits_alone`: alone in its ISR and allowed to commit alone.
fn commits_alone(l: &Leadership) -> bool {
    l.role == Role::Leader
        && l.isr.iter().all(|r| *r == l.leader_id)
        && MIN_INSYNC.min(l.replicas.len()).max(1) <= 1
}
/// Where every broker's wall clock starts (ms since the epoch), before clock jumps.
const WALL_BASE_MS: i64 = 1_700_000_000_000;
/// `fetcher.rs`: MAX_WAIT_MS (the leader's long poll), the call timeout (MAX_WAIT + 10 s),
/// BACKOFF_MIN / BACKOFF_MAX, and the one-report-a-second rule of `report_refused`.
const FETCH_MAX_WAIT: u64 = 500 * MS;
const FETCH_CALL_TIMEOUT: u64 = 500 * MS + 10 * SEC;
const FETCH_BACKOFF_MIN: u64 = 100 * MS;
const FETCH_BACKOFF_MAX: u64 = SEC;
const REPORT_EVERY: u64 = SEC;
/// `meta/node.rs`: REQUEST_TIMEOUT of `submit`, and MetaOptions::HEARTBEAT_MS (how often the
/// raft leader reaches every node, here: how often the controller resends the log end).
const SUBMIT_TIMEOUT: u64 = 10 * SEC;
const RAFT_HEARTBEAT: u64 = 100 * MS;
/// One forwarding attempt of `submit` before it retries (modelled: a connection that hangs).
const SUBMIT_ATTEMPT: u64 = 2 * SEC;
/// `controller.rs` `check_unreachable`: the probe's connect timeout.
const PROBE_TIMEOUT: u64 = 500 * MS;
/// `config.rs`: `replica_high_watermark_checkpoint_interval_ms`'s default (the maintenance
/// timer writes the high-watermark checkpoint that often, the first time one period after
/// the broker starts serving).
const HW_CHECKPOINT_EVERY: u64 = 5_000 * MS;
/// Kafka's producer state keeps the last five batches of a producer for duplicates.
const DEDUP_WINDOW: usize = 5;
/// The producer's `retry.backoff.ms`.
const RETRY_BACKOFF: u64 = 100 * MS;
/// A run that needs more events than this is a livelock.
const EVENT_BUDGET: u64 = 3_000_000;

// ---------------------------------------------------------------------------------------
// PRNG (splitmix64): no dependency, same numbers everywhere.
// ---------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64, stream: u64) -> Rng {
        let mut r = Rng(seed ^ stream.wrapping_mul(0xD1B5_4A32_D192_ED03));
        r.next();
        r
    }
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }
    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi.saturating_sub(lo) + 1)
    }
    /// True with probability `num / den`.
    fn chance(&mut self, num: u64, den: u64) -> bool {
        self.below(den) < num
    }
    fn broker(&mut self) -> i32 {
        BROKERS[self.below(3) as usize]
    }
    /// A duration between `lo` and `hi`, short ones more likely (log-uniform-ish).
    fn duration(&mut self, lo: u64, hi: u64) -> u64 {
        let mid = lo + (hi - lo) / 8;
        if self.chance(2, 3) {
            self.range(lo, mid)
        } else {
            self.range(lo, hi)
        }
    }
}

// ---------------------------------------------------------------------------------------
// The model's vocabulary.
// ---------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Node {
    /// The controller: the active controller over a Raft quorum, modelled as one reliable
    /// node whose log is linearizable (Raft itself is not simulated).
    Ctl,
    B(i32),
    /// The producer (and the admin client that asks for elections and reassignments).
    Client,
}

/// A record batch as the model keeps it: offsets, the leader epoch stamped on it, and the
/// producer's payload id (unique per batch the producer made; retries reuse it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Batch {
    base: i64,
    last: i64,
    epoch: i32,
    payload: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    Leader,
    Follower,
}

/// `cluster::partition::Leadership`.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Leadership {
    role: Role,
    leader_id: i32,
    leader_epoch: i32,
    partition_epoch: i32,
    replicas: Vec<i32>,
    isr: Vec<i32>,
}

/// `cluster::partition::FollowerProgress`.
#[derive(Clone, Copy, Debug)]
struct Progress {
    log_end: i64,
    last_fetch_ms: i64,
    leader_end_at_last_fetch: i64,
    last_caught_up_ms: i64,
}

/// The volatile part of a replica (`Partition` plus the log's high watermark state).
#[derive(Clone, Debug)]
struct Part {
    l: Leadership,
    hw: i64,
    hw_follows: bool,
    /// `LogState::leader_epoch`: stamped on what this replica appends as leader.
    log_epoch: i32,
    followers: BTreeMap<i32, Progress>,
    leading_since_ms: i64,
    altering: bool,
    /// The ISR of the AlterPartition in flight (read by the fix of bug 2 only).
    pending_isr: Option<Vec<i32>>,
}

// Some fields are read only through `Debug`, in traces.
#[allow(dead_code)]
#[derive(Clone, Debug)]
enum CtlReq {
    Register {
        id: i32,
        incarnation: u64,
    },
    Heartbeat {
        id: i32,
        epoch: i64,
        applied: u64,
    },
    AlterPartition {
        broker_id: i32,
        broker_epoch: i64,
        leader_epoch: i32,
        partition_epoch: i32,
        isr: Vec<i32>,
    },
    ReportUnreachable {
        reporter: i32,
        broker: i32,
        epoch: i64,
    },
    ElectPreferred,
    Reassign(Vec<i32>),
}

#[allow(dead_code)]
#[derive(Clone, Debug)]
enum CtlOk {
    Registered(i64),
    Heartbeat { fenced: bool },
    Done,
}

#[allow(dead_code)]
#[derive(Clone, Debug)]
enum CtlErr {
    StaleBrokerEpoch,
    NotRegistered,
    Refused(String),
    Timeout,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FetchErr {
    NotLeader,
    FencedEpoch,
    UnknownEpoch,
    OutOfRange,
}

#[derive(Clone, Debug)]
struct FetchReq {
    replica: i32,
    current_leader_epoch: i32,
    fetch_offset: i64,
    last_fetched_epoch: i32,
}

#[derive(Clone, Debug)]
struct FetchAns {
    error: Option<FetchErr>,
    diverging: Option<(i32, i64)>,
    batches: Vec<Batch>,
    hw: i64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ProduceErr {
    NotLeader,
    NotEnoughReplicas,
    NotEnoughReplicasAfterAppend,
    TimedOut,
}

#[derive(Clone, Debug)]
enum Msg {
    CtlReq {
        rpc: u64,
        req: CtlReq,
    },
    CtlResp {
        rpc: u64,
        result: Result<CtlOk, CtlErr>,
        index: u64,
    },
    /// The metadata log is committed up to `upto` (Raft replication to this node).
    MetaUpdate {
        upto: u64,
    },
    FetchReq {
        rpc: u64,
        req: FetchReq,
    },
    FetchResp {
        rpc: u64,
        ans: FetchAns,
    },
    ProduceReq {
        rpc: u64,
        payload: u64,
        records: i64,
    },
    ProduceResp {
        rpc: u64,
        result: Result<i64, ProduceErr>,
    },
    MetadataReq {
        rpc: u64,
    },
    MetadataResp {
        rpc: u64,
        leader: i32,
    },
    /// A connection refused (nothing listens) or reset (the process died).
    ConnErr {
        rpc: u64,
        refused: bool,
    },
}

impl Msg {
    fn is_request(&self) -> bool {
        matches!(
            self,
            Msg::FetchReq { .. } | Msg::ProduceReq { .. } | Msg::MetadataReq { .. }
        )
    }
    fn rpc(&self) -> u64 {
        match self {
            Msg::CtlReq { rpc, .. }
            | Msg::CtlResp { rpc, .. }
            | Msg::FetchReq { rpc, .. }
            | Msg::FetchResp { rpc, .. }
            | Msg::ProduceReq { rpc, .. }
            | Msg::ProduceResp { rpc, .. }
            | Msg::MetadataReq { rpc }
            | Msg::MetadataResp { rpc, .. }
            | Msg::ConnErr { rpc, .. } => *rpc,
            Msg::MetaUpdate { upto } => *upto,
        }
    }
    fn code(&self) -> u64 {
        match self {
            Msg::CtlReq { .. } => 1,
            Msg::CtlResp { .. } => 2,
            Msg::MetaUpdate { .. } => 3,
            Msg::FetchReq { .. } => 4,
            Msg::FetchResp { .. } => 5,
            Msg::ProduceReq { .. } => 6,
            Msg::ProduceResp { .. } => 7,
            Msg::MetadataReq { .. } => 8,
            Msg::MetadataResp { .. } => 9,
            Msg::ConnErr { .. } => 10,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Timer {
    // Brokers.
    Heartbeat,
    IsrCheck,
    Flush,
    HwCheckpoint,
    RegisterRetry,
    FetchRound { gen: u64 },
    RpcTimeout { rpc: u64 },
    LongPollEnd { rpc: u64 },
    ProduceDeadline { rpc: u64 },
    AwaitTimeout { rpc: u64 },
    // The controller.
    FencingTick,
    RebalanceTick,
    MetaResend,
    Probe { broker: i32, epoch: i64 },
    Converge,
    // The client.
    ClientNext { p: usize },
}

impl Timer {
    fn code(&self) -> u64 {
        match self {
            Timer::Heartbeat => 1,
            Timer::IsrCheck => 2,
            Timer::Flush => 3,
            Timer::RegisterRetry => 4,
            Timer::FetchRound { gen } => 5 + (gen << 8),
            Timer::RpcTimeout { rpc } => 6 + (rpc << 8),
            Timer::LongPollEnd { rpc } => 7 + (rpc << 8),
            Timer::ProduceDeadline { rpc } => 8 + (rpc << 8),
            Timer::AwaitTimeout { rpc } => 9 + (rpc << 8),
            Timer::FencingTick => 10,
            Timer::RebalanceTick => 11,
            Timer::MetaResend => 12,
            Timer::Probe { broker, .. } => 13 + ((*broker as u64) << 8),
            Timer::Converge => 14,
            Timer::ClientNext { p } => 15 + ((*p as u64) << 8),
            Timer::HwCheckpoint => 16,
        }
    }
}

/// The faults (and admin actions) of a schedule.
#[derive(Clone, Debug)]
enum Fault {
    /// kill -9: the process stops; its log stays (the page cache survives).
    Crash {
        b: i32,
        id: u64,
    },
    /// Power loss: the host stops; the log loses what was not flushed (off by default).
    PowerLoss {
        b: i32,
        id: u64,
    },
    Restart {
        b: i32,
        id: u64,
    },
    /// SIGSTOP / SIGCONT: timers and messages wait until it resumes.
    Pause {
        b: i32,
    },
    Resume {
        b: i32,
    },
    /// The broker's host is cut from every other node (messages dropped both ways).
    Isolate {
        b: i32,
    },
    Rejoin {
        b: i32,
    },
    /// One link cut (both ways), e.g. a broker from the controller only.
    Cut {
        a: Node,
        z: Node,
    },
    Mend {
        a: Node,
        z: Node,
    },
    /// Messages to and from a node take up to `extra_us` longer (and so reorder more).
    Slow {
        n: Node,
        extra_us: u64,
    },
    Fast {
        n: Node,
    },
    /// The broker's wall clock (ISR lag checks) jumps.
    ClockJump {
        b: i32,
        ms: i64,
    },
    /// The controller's session clock jumps forward (a stalled controller host).
    CtlClockJump {
        ms: u64,
    },
    /// ElectLeaders (preferred) from an admin.
    Elect,
    /// AlterPartitionReassignments to a permutation of the replicas (a new preferred order).
    Reassign {
        replicas: Vec<i32>,
    },
}

impl Fault {
    fn kind(&self) -> Option<&'static str> {
        Some(match self {
            Fault::Crash { .. } => "crash",
            Fault::PowerLoss { .. } => "power_loss",
            Fault::Pause { .. } => "pause",
            Fault::Isolate { .. } => "partition",
            Fault::Cut { .. } => "link_cut",
            Fault::Slow { .. } => "delay",
            Fault::ClockJump { .. } => "clock_jump",
            Fault::CtlClockJump { .. } => "ctl_clock_jump",
            Fault::Elect => "elect_leaders",
            Fault::Reassign { .. } => "reassign",
            _ => return None,
        })
    }
}

#[derive(Clone, Debug)]
enum Ev {
    Deliver { from: Node, to: Node, msg: Msg },
    Timer { node: Node, inc: u32, timer: Timer },
    Fault(Fault),
    EndFaults,
}

struct Scheduled {
    at: u64,
    seq: u64,
    ev: Ev,
}

impl PartialEq for Scheduled {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, o: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(o))
    }
}
impl Ord for Scheduled {
    fn cmp(&self, o: &Self) -> CmpOrdering {
        // BinaryHeap is a max-heap: the earliest (then the first scheduled) on top.
        (o.at, o.seq).cmp(&(self.at, self.seq))
    }
}

// ---------------------------------------------------------------------------------------
// Parameters of one run.
// ---------------------------------------------------------------------------------------

/// Switches of the model, the same for every seed of a run.
#[derive(Clone, Debug, Default)]
struct Options {
    /// Crashes may also be power losses (the unflushed tail is lost). Off by default: a
    /// replica that loses acknowledged records it had makes invariants 1 and 2 fail by
    /// design (Kafka makes the same trade without fsync); with it on those count as
    /// anomalies instead, and only 3-5 and convergence fail a seed.
    power_loss: bool,
    /// The three `old_*` switches bring back, for each bug the simulation found (all three
    /// fixed now), the behaviour before the fix, to show the checker catches that bug. Off
    /// by default: the model follows the real (fixed) code. Each has a regression test
    /// (`old_bug_*_is_caught`) replaying a seed that fails with the switch on, and
    /// `the_old_bug_seeds_pass_now` replays those seeds without it.
    ///
    /// Bug 1 (`old_restart_hw`): a restarted replica took its log end as its high watermark
    /// (`PartitionLog::with_state`, and `Partition::sole_leader` raised it there too), over
    /// records that may never have been committed. The fix, as modelled: every broker writes
    /// a durable high-watermark checkpoint (`cluster/hw_checkpoint.rs`) from its replica's
    /// high watermark every `replica_high_watermark_checkpoint_interval_ms` (5 s, the
    /// maintenance timer, [`Timer::HwCheckpoint`]); a restarted replica opens with the
    /// checkpointed one clamped to its log (`TopicRegistry::open_partition`,
    /// `restore_high_watermark`), and `Partition::new` moves it to the log end only for a
    /// leader alone in its ISR.
    old_restart_hw: bool,
    /// Bug 2 (`old_isr_expansion`): the leader's high watermark moved over the ISR of its
    /// image only (`Partition::maybe_advance_high_watermark`), not over the replicas an
    /// AlterPartition in flight adds. The fix: Kafka's maximal ISR (KIP-497), the joiners
    /// count for the high watermark while the request is in flight.
    old_isr_expansion: bool,
    /// Bug 3 (`old_produce_wait`): an acks=all wait (`handlers/produce.rs`
    /// `wait_replicated`) woke only on high watermark advances and checked only that this
    /// broker leads and that the high watermark passed the batch; a demotion, a truncation
    /// and a new leadership in between went unseen. The fix: the wait holds the leader
    /// epoch its batch was appended at (`AppendInfo::leader_epoch`) and fails with
    /// NOT_LEADER_OR_FOLLOWER once the replica no longer leads at it; a leadership change
    /// wakes it (`PartitionLog::set_leader_epoch` / `set_following`). (The fix's other half,
    /// a replica that no longer leads refusing leader appends atomically with its demotion,
    /// needs no switch: the model's produce checks the role and appends in one event.)
    old_produce_wait: bool,
    /// Bug 4 (`old_long_poll`): a follower's fetch parked at its leader was answered after
    /// that leader's demotion with what it had appended since as a follower
    /// (`handlers/fetch.rs` checked the leader epoch when the request arrived only). The
    /// fix: every read is checked against the request's leader epoch once done, as Kafka's
    /// `DelayedFetch`.
    old_long_poll: bool,
    /// The topic sets `unclean.leader.election.enable=true` (for the test that the checker
    /// catches the loss that allows).
    unclean: bool,
    /// The controller decides without KIP-966's eligible leader replicas.
    no_elr: bool,
    /// Record every event as text (replays, failures).
    verbose: bool,
    /// Invariants not enforced, for investigation (`OTTLA_SIM_UNCHECKED=2,3`): a violation
    /// of one counts as an anomaly `unchecked_N` and the run goes on.
    unchecked: Vec<String>,
}

#[derive(Clone, Debug)]
struct Params {
    heartbeat: u64,
    session: u64,
    lag_max_ms: i64,
    isr_check: u64,
    rebalance: Option<u64>,
    request_timeout: u64,
    delivery_timeout: u64,
    net_min: u64,
    net_max: u64,
    fault_end: u64,
    fault_gap: u64,
    produce_gap: (u64, u64),
    max_fetch_batches: usize,
    flush_every: u64,
    producers: usize,
    /// Weights of the fault kinds (crash, pause, isolate, cut, slow, clock, ctl clock,
    /// elect, reassign).
    weights: [u64; 9],
}

impl Params {
    fn draw(rng: &mut Rng) -> Params {
        let session = rng.range(1000, 9000) * MS;
        let heartbeat = session / rng.range(3, 6);
        let lag_max_ms = rng.range(300, 10_000) as i64;
        let request_timeout = rng.range(500, 30_000) * MS;
        let mut weights = [0u64; 9];
        for w in weights.iter_mut() {
            *w = rng.below(5);
        }
        if weights.iter().all(|w| *w == 0) {
            weights[0] = 1;
        }
        let net_max = rng.range(200, 5000);
        Params {
            heartbeat,
            session,
            lag_max_ms,
            // `maintenance.rs`: every replica_lag_time_max_ms / 2.
            isr_check: (lag_max_ms as u64 / 2).max(1) * MS,
            rebalance: rng.chance(1, 2).then(|| rng.range(1000, 20_000) * MS),
            request_timeout,
            delivery_timeout: 2 * request_timeout,
            net_min: rng.range(20, 200),
            net_max,
            fault_end: rng.range(8, 30) * SEC,
            fault_gap: rng.range(200, 3000) * MS,
            produce_gap: (rng.range(1, 20) * MS, rng.range(20, 200) * MS),
            max_fetch_batches: rng.range(1, 16) as usize,
            flush_every: rng.range(50, 2000) * MS,
            producers: rng.range(1, 3) as usize,
            weights,
        }
    }
}

/// The fault schedule of a seed, drawn before the run from its own stream.
fn draw_schedule(rng: &mut Rng, p: &Params, opts: &Options) -> Vec<(u64, Fault)> {
    let mut out = Vec::new();
    let total: u64 = p.weights.iter().sum();
    let mut t = rng.range(100, 1000) * MS;
    let mut id = 0u64;
    while t < p.fault_end {
        let mut pick = rng.below(total);
        let mut kind = 0;
        for (i, w) in p.weights.iter().enumerate() {
            if pick < *w {
                kind = i;
                break;
            }
            pick -= w;
        }
        id += 1;
        match kind {
            0 => {
                let b = rng.broker();
                let down = rng.duration(50 * MS, 12 * SEC);
                if opts.power_loss && rng.chance(1, 3) {
                    out.push((t, Fault::PowerLoss { b, id }));
                } else {
                    out.push((t, Fault::Crash { b, id }));
                }
                out.push((t + down, Fault::Restart { b, id }));
            }
            1 => {
                let b = rng.broker();
                out.push((t, Fault::Pause { b }));
                out.push((t + rng.duration(20 * MS, 12 * SEC), Fault::Resume { b }));
            }
            2 => {
                let b = rng.broker();
                out.push((t, Fault::Isolate { b }));
                out.push((t + rng.duration(50 * MS, 12 * SEC), Fault::Rejoin { b }));
            }
            3 => {
                let b = rng.broker();
                let z = match rng.below(3) {
                    0 => Node::Ctl,
                    1 => Node::Client,
                    _ => Node::B(BROKERS[((b as u64 + rng.range(0, 1)) % 3) as usize]),
                };
                let a = Node::B(b);
                out.push((t, Fault::Cut { a, z }));
                out.push((t + rng.duration(50 * MS, 12 * SEC), Fault::Mend { a, z }));
            }
            4 => {
                let n = match rng.below(4) {
                    0 => Node::Ctl,
                    _ => Node::B(rng.broker()),
                };
                let extra_us = rng.duration(MS, 400 * MS);
                out.push((t, Fault::Slow { n, extra_us }));
                out.push((t + rng.duration(100 * MS, 8 * SEC), Fault::Fast { n }));
            }
            5 => {
                let b = rng.broker();
                let ms = rng.duration(10, 60_000) as i64;
                let ms = if rng.chance(1, 2) { ms } else { -ms };
                out.push((t, Fault::ClockJump { b, ms }));
            }
            6 => {
                let ms = rng.range(p.session / MS / 2, 2 * p.session / MS);
                out.push((t, Fault::CtlClockJump { ms }));
            }
            7 => out.push((t, Fault::Elect)),
            _ => {
                let mut r = BROKERS.to_vec();
                for i in (1..r.len()).rev() {
                    r.swap(i, rng.below(i as u64 + 1) as usize);
                }
                out.push((t, Fault::Reassign { replicas: r }));
            }
        }
        t += rng.range(1, 2 * p.fault_gap);
    }
    out.sort_by_key(|(t, _)| *t);
    out
}

// ---------------------------------------------------------------------------------------
// Nodes.
// ---------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Proc {
    Down,
    /// Restarted: waits to catch up with the metadata log (MetaNode::start).
    CatchingUp,
    /// Partitions opened from the image, registration under way; no listener yet.
    Registering,
    Running,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Submit {
    Heartbeat,
    Register,
    RegisterAgain,
    Alter,
    Report,
}

#[derive(Clone, Debug)]
enum Pend {
    Fetch {
        gen: u64,
        asked_at: i32,
    },
    Ctl {
        kind: Submit,
        deadline: u64,
        req: CtlReq,
    },
}

#[derive(Clone, Debug)]
struct Await {
    rpc: u64,
    index: u64,
    kind: Submit,
    result: Result<CtlOk, CtlErr>,
}

#[derive(Clone, Debug)]
struct Fetcher {
    leader: i32,
    backoff: u64,
    /// Waiting for the image to change (the leader is not reachable per the image).
    idle: bool,
}

#[derive(Clone, Debug)]
struct LongPoll {
    rpc: u64,
    from: i32,
    fetch_offset: i64,
    /// The request's current leader epoch (checked again when it is answered).
    current_leader_epoch: i32,
}

#[derive(Clone, Debug)]
struct Wait {
    rpc: u64,
    base: i64,
    upto: i64,
    /// The leader epoch it appended at (only the fix of bug 3 reads it).
    epoch: i32,
}

struct Broker {
    id: i32,
    proc_: Proc,
    host_down: bool,
    /// Bumped by every crash and restart: older timers are void.
    inc: u32,
    pause_depth: u32,
    held: Vec<Ev>,
    /// Requests that reached the bound listener before the broker serves (it binds its
    /// client listener first, `Server::bind`, and serves once started).
    backlog: Vec<Ev>,
    clock_offset_ms: i64,
    crash_id: u64,
    // Durable: the log, its epoch cache, the metadata log (as the image applied), the
    // high-watermark checkpoint.
    log: Vec<Batch>,
    cache: EpochCache,
    /// `high-watermark.checkpoint` (fsynced: it survives power losses too): the replica's
    /// high watermark as last written, none before the first write.
    hw_checkpoint: Option<i64>,
    flushed: i64,
    /// Bumped whenever batches leave the log (truncation, power loss).
    trunc_ver: u64,
    meta_applied: u64,
    image: Arc<MetadataImage>,
    // Volatile.
    part: Option<Part>,
    broker_epoch: i64,
    fetcher: Option<Fetcher>,
    fetch_gen: u64,
    reported: BTreeMap<i32, u64>,
    pending: BTreeMap<u64, Pend>,
    awaiting: Vec<Await>,
    long_polls: Vec<LongPoll>,
    waits: Vec<Wait>,
}

fn leo(log: &[Batch]) -> i64 {
    log.last().map_or(0, |b| b.last + 1)
}

fn partition_of(image: &MetadataImage) -> &PartitionImage {
    let t = image.topics.values().next().expect("the topic");
    &t.partitions[0]
}

fn leadership_of(p: &PartitionImage, me: i32) -> Leadership {
    Leadership {
        role: if p.leader == me {
            Role::Leader
        } else {
            Role::Follower
        },
        leader_id: p.leader,
        leader_epoch: p.leader_epoch,
        partition_epoch: p.partition_epoch,
        replicas: p.replicas.clone(),
        isr: p.isr.clone(),
    }
}

/// The batch holding `offset` and those after it, at most `max` (the leader's read).
fn read_from(log: &[Batch], offset: i64, max: usize) -> Result<Vec<Batch>, FetchErr> {
    let end = leo(log);
    if offset > end || offset < 0 {
        return Err(FetchErr::OutOfRange);
    }
    let i = log.partition_point(|b| b.last < offset);
    Ok(log[i..].iter().take(max).copied().collect())
}

/// Whether `log` holds `want` (same offsets and payload) at its offset.
fn holds(log: &[Batch], want: &Batch) -> bool {
    let i = log.partition_point(|b| b.last < want.base);
    log.get(i)
        .is_some_and(|b| b.base == want.base && b.last == want.last && b.payload == want.payload)
}

/// `handlers/fetch.rs` `diverging_epoch`, on the model's log: the same EpochCache calls.
fn diverging_epoch(
    cache: &EpochCache,
    leader_epoch: i32,
    log_end: i64,
    last_fetched_epoch: i32,
    fetch_offset: i64,
) -> Option<(i32, i64)> {
    if last_fetched_epoch < 0 {
        return None;
    }
    let (epoch, end) = cache.end_offset_for_leader(last_fetched_epoch, leader_epoch, log_end);
    if epoch < 0 || end < 0 {
        return None;
    }
    (end < fetch_offset || epoch < last_fetched_epoch).then_some((epoch, end))
}

struct Ctl {
    image: Arc<MetadataImage>,
    /// history[i]: the image after entry i (history[0]: empty).
    history: Vec<Arc<MetadataImage>>,
    sessions: BTreeMap<i32, u64>,
    clock_jump: u64,
    topic: Uuid,
}

impl Ctl {
    fn index(&self) -> u64 {
        self.history.len() as u64 - 1
    }
}

struct Cur {
    payload: u64,
    records: i64,
    first_try: u64,
}

#[derive(Clone, Copy, Debug)]
enum CPend {
    Produce,
    Metadata,
    Admin,
}

/// One idempotent producer, one request in flight.
struct Producer {
    cur: Option<Cur>,
    leader: Option<i32>,
}

struct Client {
    next_payload: u64,
    producers: Vec<Producer>,
    /// Requests in flight: the producer (usize::MAX: the admin) and what it asked.
    pending: BTreeMap<u64, (usize, CPend)>,
    producing: bool,
}

#[derive(Default)]
struct Net {
    isolated: [u32; 4],
    cuts: BTreeMap<(Node, Node), u32>,
    slow: BTreeMap<Node, u64>,
}

#[derive(Default, Clone, Debug)]
struct Stats {
    events: u64,
    faults: BTreeMap<&'static str, u64>,
    acked: u64,
    given_up: u64,
    elections: u64,
    truncations: u64,
    anomalies: BTreeMap<&'static str, u64>,
    commits: u64,
}

impl Stats {
    fn add(&mut self, o: &Stats) {
        self.events += o.events;
        self.acked += o.acked;
        self.given_up += o.given_up;
        self.elections += o.elections;
        self.truncations += o.truncations;
        self.commits += o.commits;
        for (k, v) in &o.faults {
            *self.faults.entry(k).or_default() += v;
        }
        for (k, v) in &o.anomalies {
            *self.anomalies.entry(k).or_default() += v;
        }
    }
}

/// The incremental state of the invariant checks.
#[derive(Default)]
struct Checks {
    /// (leader, its trunc_ver, acked verified, committed verified).
    leader: Option<(i32, u64, usize, usize)>,
    /// Per pair of brokers (a < b): their trunc_vers and the batches verified equal.
    pairs: BTreeMap<(usize, usize), (u64, u64, usize)>,
    /// Per broker: the (leader epoch, hw) it last had as leader.
    leader_hw: [Option<(i32, i64)>; 3],
    /// Per broker: (leader epoch, trunc_ver, inc, batches scanned) of committed batches.
    scanned: [Option<(i32, u64, u32, usize)>; 3],
}

// ---------------------------------------------------------------------------------------
// The simulation.
// ---------------------------------------------------------------------------------------

struct Sim {
    seed: u64,
    p: Params,
    opts: Options,
    rng: Rng,
    now: u64,
    seq: u64,
    queue: BinaryHeap<Scheduled>,
    ctl: Ctl,
    brokers: Vec<Broker>,
    client: Client,
    net: Net,
    next_rpc: u64,
    /// Acknowledged batches, by base offset, and in acknowledgement order.
    acked: BTreeMap<i64, Batch>,
    acked_list: Vec<Batch>,
    /// Batches some leader had below its high watermark (consumers could read them).
    committed: BTreeMap<i64, Batch>,
    committed_list: Vec<Batch>,
    /// With power losses: the batches already counted lost (each counts once).
    lost: std::collections::BTreeSet<(bool, i64, u64)>,
    checks: Checks,
    stats: Stats,
    failure: Option<String>,
    trace: Vec<String>,
    digest: u64,
    schedule: Vec<(u64, Fault)>,
    ended: bool,
    hard_end: u64,
    converged: bool,
}

/// What one seed did.
struct Outcome {
    stats: Stats,
    digest: u64,
    failure: Option<(u64, String)>,
    trace: Vec<String>,
    schedule: Vec<(u64, Fault)>,
    params: Params,
}

fn mix(h: u64, x: u64) -> u64 {
    (h ^ x).wrapping_mul(0x100_0000_01B3).rotate_left(17) ^ (x >> 7)
}

fn node_code(n: Node) -> u64 {
    match n {
        Node::Ctl => 0,
        Node::B(b) => b as u64,
        Node::Client => 9,
    }
}

fn fmt_t(us: u64) -> String {
    format!("{:>4}.{:06}", us / SEC, us % SEC)
}

impl Sim {
    fn new(seed: u64, opts: Options) -> Sim {
        let mut prng = Rng::new(seed, 1);
        let p = Params::draw(&mut prng);
        let mut srng = Rng::new(seed, 2);
        let schedule = draw_schedule(&mut srng, &p, &opts);
        let topic = Uuid::from_u128(0x5157);
        let empty = Arc::new(MetadataImage::default());
        let ctl = Ctl {
            image: empty.clone(),
            history: vec![empty.clone()],
            sessions: BTreeMap::new(),
            clock_jump: 0,
            topic,
        };
        let brokers = BROKERS
            .iter()
            .map(|&id| Broker {
                id,
                proc_: Proc::Down,
                host_down: false,
                inc: 0,
                pause_depth: 0,
                held: Vec::new(),
                backlog: Vec::new(),
                clock_offset_ms: 0,
                crash_id: 0,
                log: Vec::new(),
                cache: EpochCache::default(),
                flushed: 0,
                trunc_ver: 0,
                meta_applied: 0,
                image: empty.clone(),
                part: None,
                hw_checkpoint: None,
                broker_epoch: 0,
                fetcher: None,
                fetch_gen: 0,
                reported: BTreeMap::new(),
                pending: BTreeMap::new(),
                awaiting: Vec::new(),
                long_polls: Vec::new(),
                waits: Vec::new(),
            })
            .collect();
        let hard_end = p.fault_end + p.delivery_timeout + 120 * SEC;
        let producers = p.producers;
        let mut sim = Sim {
            seed,
            p,
            opts,
            rng: Rng::new(seed, 3),
            now: 0,
            seq: 0,
            queue: BinaryHeap::new(),
            ctl,
            brokers,
            client: Client {
                next_payload: 1,
                producers: (0..producers)
                    .map(|_| Producer {
                        cur: None,
                        leader: None,
                    })
                    .collect(),
                pending: BTreeMap::new(),
                producing: true,
            },
            net: Net::default(),
            next_rpc: 1,
            acked: BTreeMap::new(),
            acked_list: Vec::new(),
            committed: BTreeMap::new(),
            committed_list: Vec::new(),
            lost: Default::default(),
            checks: Checks::default(),
            stats: Stats::default(),
            failure: None,
            trace: Vec::new(),
            digest: 0xcbf2_9ce4_8422_2325,
            schedule,
            ended: false,
            hard_end,
            converged: false,
        };
        sim.bootstrap();
        sim
    }

    /// The cluster as it is once formed: three brokers registered and unfenced, the topic
    /// with replicas [1, 2, 3] led by 1; every broker has applied it and runs.
    fn bootstrap(&mut self) {
        for id in BROKERS {
            self.commit(vec![MetaRecord::RegisterBroker {
                id,
                incarnation: Uuid::from_u128(id as u128),
                endpoints: vec![endpoint(id)],
                rack: None,
            }]);
        }
        for id in BROKERS {
            self.commit(vec![MetaRecord::UnfenceBroker {
                id,
                epoch: id as i64,
            }]);
        }
        let mut records = vec![
            MetaRecord::Topic {
                name: "t".into(),
                id: self.ctl.topic,
            },
            MetaRecord::Partition {
                topic_id: self.ctl.topic,
                index: 0,
                replicas: BROKERS.to_vec(),
                isr: BROKERS.to_vec(),
                leader: 1,
                leader_epoch: 0,
                partition_epoch: 0,
            },
        ];
        if self.opts.unclean {
            records.push(MetaRecord::Config {
                resource: ottla::meta::records::ConfigResource::Topic("t".into()),
                name: "unclean.leader.election.enable".into(),
                value: Some("true".into()),
            });
        }
        self.commit(records);
        let index = self.ctl.index();
        for bi in 0..3 {
            let image = self.ctl.history[index as usize].clone();
            let b = &mut self.brokers[bi];
            b.image = image;
            b.meta_applied = index;
            b.broker_epoch = b.id as i64;
            b.proc_ = Proc::Registering;
            self.materialize(bi);
            self.start_running(bi);
        }
        self.timer(Node::Ctl, 0, self.p.session / 4, Timer::FencingTick);
        self.timer(Node::Ctl, 0, RAFT_HEARTBEAT, Timer::MetaResend);
        if let Some(r) = self.p.rebalance {
            self.timer(Node::Ctl, 0, r, Timer::RebalanceTick);
        }
        for p in 0..self.client.producers.len() {
            self.timer(
                Node::Client,
                0,
                50 * MS + p as u64 * 7 * MS,
                Timer::ClientNext { p },
            );
        }
        for (t, f) in std::mem::take(&mut self.schedule) {
            self.push(t, Ev::Fault(f.clone()));
            self.schedule.push((t, f));
        }
        let end = self.p.fault_end;
        self.push(end, Ev::EndFaults);
    }

    // --- plumbing -------------------------------------------------------------------------

    fn push(&mut self, at: u64, ev: Ev) {
        self.seq += 1;
        self.queue.push(Scheduled {
            at,
            seq: self.seq,
            ev,
        });
    }

    fn timer(&mut self, node: Node, inc: u32, after: u64, timer: Timer) {
        self.push(self.now + after, Ev::Timer { node, inc, timer });
    }

    fn btimer(&mut self, bi: usize, after: u64, timer: Timer) {
        let inc = self.brokers[bi].inc;
        self.timer(Node::B(bi as i32 + 1), inc, after, timer);
    }

    fn rpc(&mut self) -> u64 {
        self.next_rpc += 1;
        self.next_rpc
    }

    fn note(&mut self, f: impl FnOnce() -> String) {
        if self.opts.verbose {
            let line = format!("{}          {}", fmt_t(self.now), f());
            self.trace.push(line);
        }
    }

    fn fail(&mut self, invariant: &str, msg: String) {
        if self.opts.unchecked.iter().any(|u| u == invariant) {
            let name: &'static str = match invariant {
                "1" => "unchecked_1",
                "1b" => "unchecked_1b",
                "2" => "unchecked_2",
                "3" => "unchecked_3",
                "4" => "unchecked_4",
                _ => "unchecked_5",
            };
            *self.stats.anomalies.entry(name).or_default() += 1;
            self.note(|| format!("UNCHECKED ({invariant}) {msg}"));
            return;
        }
        let lossy = matches!(invariant, "1" | "1b" | "2");
        if self.opts.power_loss && lossy {
            let name = match invariant {
                "1" => "acked_lost_power_loss",
                "1b" => "committed_lost_power_loss",
                _ => "diverged_below_hw_power_loss",
            };
            *self.stats.anomalies.entry(name).or_default() += 1;
            self.note(|| format!("ANOMALY ({invariant}) {msg}"));
            return;
        }
        if self.failure.is_none() {
            self.failure = Some(format!("invariant ({invariant}) broken: {msg}"));
        }
    }

    fn anomaly(&mut self, name: &'static str, msg: String) {
        *self.stats.anomalies.entry(name).or_default() += 1;
        self.note(|| format!("ANOMALY {name}: {msg}"));
    }

    fn link_up(&self, a: Node, z: Node) -> bool {
        if a == z {
            return true;
        }
        let iso = |n: Node| matches!(n, Node::B(b) if self.net.isolated[b as usize] > 0);
        if iso(a) || iso(z) {
            return false;
        }
        let key = if a < z { (a, z) } else { (z, a) };
        self.net.cuts.get(&key).is_none_or(|c| *c == 0)
    }

    fn send(&mut self, from: Node, to: Node, msg: Msg) {
        if !self.link_up(from, to) {
            self.note(|| format!("dropped {from:?} -> {to:?} {msg:?}"));
            return;
        }
        let mut delay = self.rng.range(self.p.net_min, self.p.net_max);
        for n in [from, to] {
            if let Some(extra) = self.net.slow.get(&n).copied() {
                delay += self.rng.range(0, extra);
            }
        }
        self.push(self.now + delay, Ev::Deliver { from, to, msg });
    }

    fn wall_ms(&self, bi: usize) -> i64 {
        WALL_BASE_MS + (self.now / MS) as i64 + self.brokers[bi].clock_offset_ms
    }

    fn ctl_now(&self) -> u64 {
        self.now + self.ctl.clock_jump
    }

    // --- the controller ---------------------------------------------------------------------

    /// Applies `records` as one metadata log entry (the real `MetadataImage::apply`) and
    /// checks what the decision did to the partition (invariants 4 and 5).
    fn commit(&mut self, records: Vec<MetaRecord>) -> u64 {
        let index = self.ctl.index() + 1;
        let before = self.ctl.image.clone();
        let mut next = (*before).clone();
        let mut delta = Delta::default();
        next.apply(
            openraft::LogId::new(openraft::CommittedLeaderId::new(1, 1), index),
            &records,
            &mut delta,
        );
        let next = Arc::new(next);
        if let (Some(bt), Some(nt)) = (before.topics.values().next(), next.topics.values().next()) {
            let (a, z) = (&bt.partitions[0], &nt.partitions[0]);
            // Only ELR empties an ISR, and only with the partition offline.
            if z.isr.is_empty() && (self.opts.no_elr || z.leader != NO_LEADER) {
                self.fail(
                    "4",
                    format!("entry {index} leaves the ISR empty: {records:?}"),
                );
            }
            if z.leader != NO_LEADER && !z.isr.contains(&z.leader) {
                self.fail(
                    "4",
                    format!(
                        "entry {index}: leader {} outside the ISR {:?}",
                        z.leader, z.isr
                    ),
                );
            }
            if z.leader_epoch < a.leader_epoch || z.partition_epoch < a.partition_epoch {
                self.fail(
                    "5",
                    format!("entry {index}: epochs went back: {a:?} -> {z:?}"),
                );
            }
            if z.leader != a.leader && z.leader != NO_LEADER {
                self.stats.elections += 1;
                // Clean: from the ISR, the ELR or the last known leader (KIP-966; the same
                // change may first empty the ISR or the ELR, as an unclean shutdown does).
                let eligible = a.isr.contains(&z.leader)
                    || a.elr.contains(&z.leader)
                    || a.last_known_elr == [z.leader];
                if !self.opts.unclean && !eligible {
                    self.fail(
                        "4",
                        format!(
                            "entry {index}: leader {} elected from outside the ISR {:?} and ELR {:?}",
                            z.leader, a.isr, a.elr
                        ),
                    );
                }
                if !next.is_alive(z.leader) {
                    self.fail(
                        "4",
                        format!("entry {index}: fenced broker {} elected", z.leader),
                    );
                }
            }
            if z.leader != a.leader && z.leader_epoch <= a.leader_epoch {
                self.fail(
                    "5",
                    format!("entry {index}: the leader changed without a new epoch"),
                );
            }
        }
        self.ctl.image = next.clone();
        self.ctl.history.push(next);
        self.stats.commits += 1;
        self.note(|| format!("CTL commit #{index}: {records:?}"));
        for b in BROKERS {
            self.send(Node::Ctl, Node::B(b), Msg::MetaUpdate { upto: index });
        }
        index
    }

    fn ctl_request(&mut self, from: Node, rpc: u64, req: CtlReq) {
        let image = self.ctl.image.clone();
        let now = self.ctl_now();
        if let CtlReq::Heartbeat { id, .. } | CtlReq::Register { id, .. } = &req {
            self.ctl.sessions.insert(*id, now);
        }
        let topic = self.ctl.topic;
        let (result, index) = match req {
            CtlReq::Register { id, incarnation } => {
                let incarnation = Uuid::from_u128(((id as u128) << 64) | incarnation as u128);
                // A new process here comes from a kill -9 (never a clean shutdown): with ELR
                // its replicas leave every ISR and ELR (`controller.rs`).
                let new_process = image
                    .brokers
                    .get(&id)
                    .is_none_or(|b| b.incarnation != incarnation);
                let rules = rules(&self.opts);
                let changes = if new_process {
                    election::on_unclean_shutdown(&image, &rules, id)
                } else if image.is_alive(id) {
                    election::on_fence(&image, &rules, &[id], false)
                } else {
                    Vec::new()
                };
                let mut records = vec![MetaRecord::RegisterBroker {
                    id,
                    incarnation,
                    endpoints: vec![endpoint(id)],
                    rack: None,
                }];
                records.extend(changes);
                let index = self.commit(records);
                (Ok(CtlOk::Registered(index as i64)), index)
            }
            CtlReq::Heartbeat { id, epoch, applied } => match image.brokers.get(&id) {
                None => (Err(CtlErr::NotRegistered), 0),
                Some(b) if b.epoch != epoch => (Err(CtlErr::StaleBrokerEpoch), 0),
                Some(b) if b.fenced && applied >= b.epoch as u64 => {
                    let mut records = vec![MetaRecord::UnfenceBroker { id, epoch }];
                    records.extend(election::on_unfence(&image, &rules(&self.opts), id));
                    let index = self.commit(records);
                    (Ok(CtlOk::Heartbeat { fenced: false }), index)
                }
                Some(b) => (Ok(CtlOk::Heartbeat { fenced: b.fenced }), 0),
            },
            CtlReq::AlterPartition {
                broker_id,
                broker_epoch,
                leader_epoch,
                partition_epoch,
                isr,
            } => match alter_partition(
                &image,
                topic,
                broker_id,
                broker_epoch,
                (leader_epoch, partition_epoch),
                isr.clone(),
                &rules(&self.opts),
            ) {
                Ok(records) => {
                    // Not a check of the real code but the model's view of every log: a
                    // replica let into the ISR without what the leader has below its HW.
                    let old = &partition_of(&image).isr;
                    let lb = &self.brokers[(broker_id - 1) as usize];
                    let hw = lb.part.as_ref().map_or(0, |p| p.hw);
                    for r in isr.iter().filter(|r| !old.contains(r)) {
                        let end = leo(&self.brokers[(*r - 1) as usize].log);
                        if end < hw {
                            self.anomaly(
                                "isr_joined_behind_hw",
                                format!("B{r} joins the ISR with log end {end} below leader B{broker_id}'s high watermark {hw}"),
                            );
                        }
                    }
                    let index = self.commit(records);
                    (Ok(CtlOk::Done), index)
                }
                Err(e) => (Err(e), 0),
            },
            CtlReq::ReportUnreachable { broker, epoch, .. } => {
                if image
                    .brokers
                    .get(&broker)
                    .is_some_and(|b| b.epoch == epoch && !b.fenced)
                {
                    let rtt = 2 * self.rng.range(self.p.net_min, self.p.net_max);
                    self.timer(
                        Node::Ctl,
                        0,
                        rtt.min(PROBE_TIMEOUT),
                        Timer::Probe { broker, epoch },
                    );
                }
                (Ok(CtlOk::Done), 0)
            }
            CtlReq::ElectPreferred => {
                let t = image.topics[&topic].clone();
                match election::elect(&image, &rules(&self.opts), &t, 0, ElectionType::Preferred) {
                    Ok(r) => {
                        let index = self.commit(vec![r]);
                        (Ok(CtlOk::Done), index)
                    }
                    Err(e) => (Err(CtlErr::Refused(format!("{e:?}"))), 0),
                }
            }
            CtlReq::Reassign(target) => {
                let t = image.topics[&topic].clone();
                match reassign::reassign(&image, &t, 0, Some(&target), false) {
                    Ok(records) => {
                        let index = self.commit(records);
                        (Ok(CtlOk::Done), index)
                    }
                    Err(e) => (Err(CtlErr::Refused(format!("{e:?}"))), 0),
                }
            }
        };
        self.send(Node::Ctl, from, Msg::CtlResp { rpc, result, index });
    }

    fn ctl_timer(&mut self, timer: Timer) {
        match timer {
            Timer::FencingTick => {
                let now = self.ctl_now();
                let image = self.ctl.image.clone();
                let timeout = self.p.session;
                let sessions = &mut self.ctl.sessions;
                let expired: Vec<(i32, i64)> = image
                    .live_brokers()
                    .filter(|b| now - *sessions.entry(b.id).or_insert(now) > timeout)
                    .map(|b| (b.id, b.epoch))
                    .collect();
                if !expired.is_empty() {
                    let ids: Vec<i32> = expired.iter().map(|(id, _)| *id).collect();
                    let mut records: Vec<MetaRecord> = expired
                        .iter()
                        .map(|(id, epoch)| MetaRecord::FenceBroker {
                            id: *id,
                            epoch: *epoch,
                        })
                        .collect();
                    records.extend(election::on_fence(&image, &rules(&self.opts), &ids, false));
                    self.commit(records);
                }
                self.timer(
                    Node::Ctl,
                    0,
                    (self.p.session / 4).max(50 * MS),
                    Timer::FencingTick,
                );
            }
            Timer::RebalanceTick => {
                let records = election::rebalance(&self.ctl.image, &rules(&self.opts), 10);
                if !records.is_empty() {
                    self.commit(records);
                }
                if let Some(r) = self.p.rebalance {
                    self.timer(Node::Ctl, 0, r, Timer::RebalanceTick);
                }
            }
            Timer::MetaResend => {
                let upto = self.ctl.index();
                for b in BROKERS {
                    self.send(Node::Ctl, Node::B(b), Msg::MetaUpdate { upto });
                }
                self.timer(Node::Ctl, 0, RAFT_HEARTBEAT, Timer::MetaResend);
            }
            Timer::Probe { broker, epoch } => {
                let b = &self.brokers[(broker - 1) as usize];
                // Only a dead process refuses: a starting one has bound its listener.
                let refused = self.link_up(Node::Ctl, Node::B(broker))
                    && !b.host_down
                    && b.proc_ == Proc::Down;
                let image = self.ctl.image.clone();
                let alive = image
                    .brokers
                    .get(&broker)
                    .is_some_and(|b| b.epoch == epoch && !b.fenced);
                self.note(|| format!("CTL probe of B{broker}: refused={refused}"));
                if refused && alive {
                    let mut records = vec![MetaRecord::FenceBroker { id: broker, epoch }];
                    records.extend(election::on_fence(
                        &image,
                        &rules(&self.opts),
                        &[broker],
                        false,
                    ));
                    self.commit(records);
                }
            }
            Timer::Converge => {
                if self.is_converged() {
                    self.converged = true;
                } else {
                    self.timer(Node::Ctl, 0, 250 * MS, Timer::Converge);
                }
            }
            other => panic!("controller timer {other:?}"),
        }
    }

    // --- brokers: lifecycle -------------------------------------------------------------------

    /// The registry opens the partition (`TopicRegistry::open_partition`): the log loaded,
    /// its high watermark restored from the checkpoint (none: the log start, 0 here),
    /// clamped to the log (`restore_high_watermark`), then `Partition::new` with the image's
    /// leadership: a leader takes its leader epoch (`set_leader_epoch`), and only a leader
    /// alone in its ISR moves the high watermark to its log end (`hw_follows_log_end`).
    /// With `old_restart_hw`: the high watermark is the log end, as before the fix.
    fn materialize(&mut self, bi: usize) {
        let old = self.opts.old_restart_hw;
        let b = &mut self.brokers[bi];
        let end = leo(&b.log);
        let next = leadership_of(partition_of(&b.image), b.id);
        let restored = if old {
            end
        } else {
            b.hw_checkpoint.unwrap_or(0).clamp(0, end)
        };
        let leads = next.role == Role::Leader;
        if leads && b.cache.latest_epoch().is_none_or(|e| e < next.leader_epoch) {
            b.cache.assign(next.leader_epoch, end);
        }
        let alone = commits_alone(&next);
        let hw = if alone { end } else { restored };
        let id = b.id;
        self.note(|| {
            format!("B{id} opened: high watermark {hw} (log end {end}), leadership {next:?}")
        });
        self.brokers[bi].part = Some(Part {
            log_epoch: if leads { next.leader_epoch } else { 0 },
            l: next,
            hw,
            hw_follows: alone,
            followers: BTreeMap::new(),
            leading_since_ms: 0,
            altering: false,
            pending_isr: None,
        });
    }

    fn start_running(&mut self, bi: usize) {
        self.brokers[bi].proc_ = Proc::Running;
        let backlog = std::mem::take(&mut self.brokers[bi].backlog);
        for ev in backlog {
            self.push(self.now, ev);
        }
        let hb = self.p.heartbeat;
        let first = self.rng.range(1, hb);
        self.btimer(bi, first, Timer::Heartbeat);
        let isr = self.p.isr_check;
        self.btimer(bi, isr, Timer::IsrCheck);
        let flush = self.p.flush_every;
        self.btimer(bi, flush, Timer::Flush);
        self.btimer(bi, HW_CHECKPOINT_EVERY, Timer::HwCheckpoint);
        self.reconcile(bi);
    }

    fn crash(&mut self, bi: usize, power: bool) {
        let id = self.brokers[bi].id;
        let me = Node::B(id);
        if !power {
            // The kernel resets the connections of the dead process.
            let polls = std::mem::take(&mut self.brokers[bi].long_polls);
            for lp in polls {
                self.send(
                    me,
                    Node::B(lp.from),
                    Msg::ConnErr {
                        rpc: lp.rpc,
                        refused: false,
                    },
                );
            }
            let waits = std::mem::take(&mut self.brokers[bi].waits);
            for w in waits {
                self.send(
                    me,
                    Node::Client,
                    Msg::ConnErr {
                        rpc: w.rpc,
                        refused: false,
                    },
                );
            }
            let mut held = std::mem::take(&mut self.brokers[bi].held);
            held.append(&mut self.brokers[bi].backlog);
            for ev in held {
                if let Ev::Deliver { from, msg, .. } = ev {
                    if msg.is_request() {
                        self.send(
                            me,
                            from,
                            Msg::ConnErr {
                                rpc: msg.rpc(),
                                refused: false,
                            },
                        );
                    }
                }
            }
        }
        let b = &mut self.brokers[bi];
        b.proc_ = Proc::Down;
        b.host_down = power;
        b.inc += 1;
        b.pause_depth = 0;
        b.held.clear();
        b.backlog.clear();
        b.part = None;
        b.fetcher = None;
        b.fetch_gen += 1;
        b.reported.clear();
        b.pending.clear();
        b.awaiting.clear();
        b.long_polls.clear();
        b.waits.clear();
        b.broker_epoch = 0;
        if power {
            let keep = b.log.partition_point(|x| x.last < b.flushed);
            if keep < b.log.len() {
                b.log.truncate(keep);
                b.trunc_ver += 1;
            }
            let end = leo(&b.log);
            b.cache.truncate_from_end(end);
        }
        self.note(|| format!("B{id} {}", if power { "POWER LOSS" } else { "CRASHED" }));
    }

    fn restart(&mut self, bi: usize) {
        let b = &mut self.brokers[bi];
        b.proc_ = Proc::CatchingUp;
        b.host_down = false;
        b.inc += 1;
        // The loader: the checkpointed cache, every batch's epoch assigned again, cut at the
        // log end (an epoch cached at the end with no batch goes).
        let mut cache = b.cache.clone();
        for x in &b.log {
            cache.assign(x.epoch, x.base);
        }
        cache.truncate_from_end(leo(&b.log));
        b.cache = cache;
        let id = b.id;
        self.note(|| format!("B{id} RESTARTED (catching up with the metadata log)"));
    }

    /// Applies the metadata log up to `upto`, entry by entry (the publisher after each).
    fn on_meta_update(&mut self, bi: usize, upto: u64) {
        let upto = upto.min(self.ctl.index());
        while self.brokers[bi].meta_applied < upto {
            let i = self.brokers[bi].meta_applied + 1;
            let image = self.ctl.history[i as usize].clone();
            let b = &mut self.brokers[bi];
            let before = partition_of(&b.image).clone();
            b.image = image.clone();
            b.meta_applied = i;
            if let Some(part) = &b.part {
                let now = partition_of(&image);
                if *now != before {
                    let next = leadership_of(now, b.id);
                    // topics.rs ignores "a leadership whose leader epoch goes back".
                    if next.leader_epoch >= part.l.leader_epoch && part.l != next {
                        self.set_leadership(bi, next);
                    }
                }
            }
            if self.brokers[bi].proc_ == Proc::Running {
                self.reconcile(bi);
            }
        }
        if self.brokers[bi].proc_ == Proc::CatchingUp {
            // Caught up: the registry opens the logs, then the broker registers.
            self.brokers[bi].proc_ = Proc::Registering;
            self.materialize(bi);
            self.register(bi, Submit::Register);
        }
        // Submits waiting for the local image.
        let applied = self.brokers[bi].meta_applied;
        let (done, rest): (Vec<Await>, Vec<Await>) = std::mem::take(&mut self.brokers[bi].awaiting)
            .into_iter()
            .partition(|a| a.index <= applied);
        self.brokers[bi].awaiting = rest;
        for a in done {
            self.submit_done(bi, a.kind, a.result);
        }
    }

    fn register(&mut self, bi: usize, kind: Submit) {
        let b = &self.brokers[bi];
        let req = CtlReq::Register {
            id: b.id,
            incarnation: b.inc as u64,
        };
        self.submit(bi, kind, req, self.now + SUBMIT_TIMEOUT);
    }

    fn submit(&mut self, bi: usize, kind: Submit, req: CtlReq, deadline: u64) {
        let rpc = self.rpc();
        let me = Node::B(self.brokers[bi].id);
        self.brokers[bi].pending.insert(
            rpc,
            Pend::Ctl {
                kind,
                deadline,
                req: req.clone(),
            },
        );
        self.send(me, Node::Ctl, Msg::CtlReq { rpc, req });
        let attempt = SUBMIT_ATTEMPT.min(deadline.saturating_sub(self.now)).max(1);
        self.btimer(bi, attempt, Timer::RpcTimeout { rpc });
    }

    fn on_ctl_resp(&mut self, bi: usize, rpc: u64, result: Result<CtlOk, CtlErr>, index: u64) {
        let Some(Pend::Ctl { kind, deadline, .. }) = self.brokers[bi].pending.remove(&rpc) else {
            return;
        };
        if result.is_ok() && index > self.brokers[bi].meta_applied {
            self.brokers[bi].awaiting.push(Await {
                rpc,
                index,
                kind,
                result,
            });
            let after = deadline.saturating_sub(self.now).max(1);
            self.btimer(bi, after, Timer::AwaitTimeout { rpc });
            return;
        }
        self.submit_done(bi, kind, result);
    }

    fn submit_done(&mut self, bi: usize, kind: Submit, result: Result<CtlOk, CtlErr>) {
        let hb = self.p.heartbeat;
        match kind {
            Submit::Heartbeat => match result {
                Err(CtlErr::StaleBrokerEpoch | CtlErr::NotRegistered) => {
                    self.register(bi, Submit::RegisterAgain)
                }
                _ => self.btimer(bi, hb, Timer::Heartbeat),
            },
            Submit::Register => match result {
                Ok(CtlOk::Registered(epoch)) => {
                    self.brokers[bi].broker_epoch = epoch;
                    self.start_running(bi);
                }
                // The process would exit and be started again by its supervisor.
                _ => self.btimer(bi, SEC, Timer::RegisterRetry),
            },
            Submit::RegisterAgain => {
                if let Ok(CtlOk::Registered(epoch)) = result {
                    self.brokers[bi].broker_epoch = epoch;
                }
                self.btimer(bi, hb, Timer::Heartbeat);
            }
            Submit::Alter => {
                if let Some(p) = self.brokers[bi].part.as_mut() {
                    p.altering = false;
                    p.pending_isr = None;
                }
            }
            Submit::Report => {}
        }
    }

    fn on_rpc_timeout(&mut self, bi: usize, rpc: u64) {
        match self.brokers[bi].pending.remove(&rpc) {
            Some(Pend::Ctl {
                kind,
                deadline,
                req,
            }) => {
                if self.now >= deadline {
                    self.submit_done(bi, kind, Err(CtlErr::Timeout));
                } else {
                    // `submit` retries the forward until its deadline.
                    self.submit(bi, kind, req, deadline);
                }
            }
            Some(Pend::Fetch { gen, .. }) => self.fetch_failed(bi, gen, false),
            None => {}
        }
    }

    // --- brokers: the partition ---------------------------------------------------------------

    /// `Partition::set_leadership`.
    fn set_leadership(&mut self, bi: usize, next: Leadership) {
        let b = &mut self.brokers[bi];
        let end = leo(&b.log);
        let Broker { part, cache, .. } = b;
        let part = part.as_mut().expect("partition");
        if next.leader_epoch < part.l.leader_epoch {
            let msg = format!(
                "B{}: leader epoch {} after {}",
                b.id, next.leader_epoch, part.l.leader_epoch
            );
            self.fail("5", msg);
            return;
        }
        // `PartitionLog::set_leader_epoch` / `set_following` wake the replication waits when
        // the replica starts or stops leading or leads at another epoch.
        let was_leading = part.l.role == Role::Leader;
        let leadership_changed = if next.role == Role::Leader {
            !was_leading || next.leader_epoch != part.log_epoch
        } else {
            was_leading
        };
        if next.role == Role::Leader {
            // PartitionLog::set_leader_epoch.
            part.log_epoch = next.leader_epoch;
            if cache.latest_epoch().is_none_or(|e| e < next.leader_epoch) {
                cache.assign(next.leader_epoch, end);
            }
        }
        let alone = commits_alone(&next);
        part.hw_follows = alone;
        let mut raised = false;
        if alone && end > part.hw {
            part.hw = end;
            raised = true;
        }
        if next.role != Role::Leader || next.leader_epoch != part.l.leader_epoch {
            part.followers.clear();
            part.leading_since_ms = 0;
        }
        let id = b.id;
        self.note(|| format!("B{id} leadership {next:?}"));
        self.brokers[bi].part.as_mut().expect("partition").l = next;
        // Before the fix of bug 3 only high watermark advances woke the waits.
        if raised || (leadership_changed && !self.opts.old_produce_wait) {
            self.wake_waits(bi);
        }
        self.maybe_advance_hw(bi);
    }

    /// `Partition::maybe_advance_high_watermark`.
    fn maybe_advance_hw(&mut self, bi: usize) {
        let old = self.opts.old_isr_expansion;
        let b = &mut self.brokers[bi];
        let end = leo(&b.log);
        let Some(part) = b.part.as_mut() else {
            return;
        };
        // Kafka's strict min ISR: no commit while the ISR is below it.
        if part.l.role != Role::Leader || part.l.isr.len() < MIN_INSYNC.min(part.l.replicas.len()) {
            return;
        }
        let mut hw = end;
        for r in part.l.isr.iter().filter(|r| **r != part.l.leader_id) {
            match part.followers.get(r) {
                Some(f) => hw = hw.min(f.log_end),
                None => return,
            }
        }
        if !old {
            // KIP-497's maximal ISR: the joiners of the AlterPartition in flight count.
            for r in part
                .pending_isr
                .iter()
                .flatten()
                .filter(|r| **r != part.l.leader_id)
            {
                match part.followers.get(r) {
                    Some(f) => hw = hw.min(f.log_end),
                    None => return,
                }
            }
        }
        let target = hw.min(end);
        if target > part.hw {
            part.hw = target;
            self.wake_waits(bi);
        }
    }

    /// The high watermark moved up or the leadership changed: `wait_replicated` wakes
    /// (`hw_advanced`) and checks the leadership first (still leading at the epoch the batch
    /// was appended at, else NOT_LEADER_OR_FOLLOWER), then the high watermark and the ISR.
    /// With `old_produce_wait`: woken by high watermark advances only, and "still leading"
    /// at any epoch, as before the fix.
    fn wake_waits(&mut self, bi: usize) {
        let old = self.opts.old_produce_wait;
        let Broker {
            id, part, waits, ..
        } = &mut self.brokers[bi];
        let Some(part) = part.as_ref() else {
            return;
        };
        if waits.is_empty() {
            return;
        }
        let mut answers = Vec::new();
        waits.retain(|w| {
            if part.l.role != Role::Leader || (!old && part.l.leader_epoch != w.epoch) {
                answers.push((w.rpc, Err(ProduceErr::NotLeader)));
                false
            } else if part.hw >= w.upto {
                answers.push((
                    w.rpc,
                    if part.l.isr.len() < MIN_INSYNC {
                        Err(ProduceErr::NotEnoughReplicasAfterAppend)
                    } else {
                        Ok(w.base)
                    },
                ));
                false
            } else {
                true
            }
        });
        let me = Node::B(*id);
        for (rpc, result) in answers {
            self.send(me, Node::Client, Msg::ProduceResp { rpc, result });
        }
    }

    /// `Partition::follower_fetched`.
    fn follower_fetched(
        &mut self,
        bi: usize,
        replica: i32,
        fetch_offset: i64,
    ) -> Result<(), FetchErr> {
        let now_ms = self.wall_ms(bi);
        let b = &mut self.brokers[bi];
        let leader_end = leo(&b.log);
        let part = b.part.as_mut().expect("partition");
        let l = &part.l;
        if l.role != Role::Leader || replica == l.leader_id || !l.replicas.contains(&replica) {
            return Err(FetchErr::NotLeader);
        }
        let before = part.followers.get(&replica).copied();
        let caught_up = if fetch_offset >= leader_end {
            now_ms
        } else {
            match before {
                Some(b) if fetch_offset >= b.leader_end_at_last_fetch => b.last_fetch_ms,
                Some(b) => b.last_caught_up_ms,
                None => -1,
            }
        };
        part.followers.insert(
            replica,
            Progress {
                log_end: fetch_offset,
                last_fetch_ms: now_ms,
                leader_end_at_last_fetch: leader_end,
                last_caught_up_ms: caught_up,
            },
        );
        self.maybe_advance_hw(bi);
        Ok(())
    }

    /// `Partition::wanted_isr`.
    fn wanted_isr(&mut self, bi: usize) -> Option<Vec<i32>> {
        let now_ms = self.wall_ms(bi);
        let lag_max = self.p.lag_max_ms;
        let b = &mut self.brokers[bi];
        let epoch_start_entry = b.cache.entries().last().copied();
        let part = b.part.as_mut()?;
        let l = &part.l;
        if l.role != Role::Leader {
            return None;
        }
        if part.leading_since_ms == 0 {
            part.leading_since_ms = now_ms;
        }
        let since = part.leading_since_ms;
        let hw = part.hw;
        let epoch_start = epoch_start_entry
            .filter(|e| e.epoch == l.leader_epoch)
            .map_or(0, |e| e.start_offset);
        let followers = &part.followers;
        let mut isr: Vec<i32> = l
            .isr
            .iter()
            .copied()
            .filter(|r| {
                if *r == l.leader_id {
                    return true;
                }
                let caught_up = followers
                    .get(r)
                    .map_or(since, |f| f.last_caught_up_ms.max(since));
                now_ms - caught_up <= lag_max
            })
            .collect();
        for r in &l.replicas {
            if isr.contains(r) {
                continue;
            }
            if let Some(f) = followers.get(r) {
                if f.log_end >= hw
                    && f.log_end >= epoch_start
                    && now_ms - f.last_caught_up_ms <= lag_max
                {
                    isr.push(*r);
                }
            }
        }
        isr.sort_unstable();
        let mut now = l.isr.clone();
        now.sort_unstable();
        (isr != now).then_some(isr)
    }

    /// `Broker::maybe_alter_isr`.
    fn maybe_alter_isr(&mut self, bi: usize) {
        let Some(isr) = self.wanted_isr(bi) else {
            return;
        };
        let b = &mut self.brokers[bi];
        let part = b.part.as_mut().expect("partition");
        if part.altering {
            return;
        }
        part.altering = true;
        part.pending_isr = Some(isr.clone());
        let req = CtlReq::AlterPartition {
            broker_id: b.id,
            broker_epoch: b.broker_epoch,
            leader_epoch: part.l.leader_epoch,
            partition_epoch: part.l.partition_epoch,
            isr,
        };
        self.submit(bi, Submit::Alter, req, self.now + SUBMIT_TIMEOUT);
    }

    /// An append (as leader or follower) wakes the follower fetches parked here.
    fn appended(&mut self, bi: usize) {
        if self.brokers[bi].long_polls.is_empty() {
            return;
        }
        let polls = std::mem::take(&mut self.brokers[bi].long_polls);
        for lp in polls {
            let b = &self.brokers[bi];
            match read_from(&b.log, lp.fetch_offset, self.p.max_fetch_batches) {
                Ok(v) if v.is_empty() => self.brokers[bi].long_polls.push(lp),
                read => self.answer_poll(bi, lp, read),
            }
        }
    }

    /// `handlers/fetch.rs` `read_all`: the read is checked against the request's leader
    /// epoch once done (`Partition::check_leader`); a fetch that outlived a demotion answers
    /// the error instead (unless `old_long_poll`).
    fn answer_poll(&mut self, bi: usize, lp: LongPoll, read: Result<Vec<Batch>, FetchErr>) {
        let b = &self.brokers[bi];
        let hw = b.part.as_ref().map_or(-1, |p| p.hw);
        let read = match (self.opts.old_long_poll, b.part.as_ref()) {
            (false, Some(part)) => check_leader(&part.l, lp.current_leader_epoch).and(read),
            _ => read,
        };
        let ans = match read {
            Ok(batches) => FetchAns {
                error: None,
                diverging: None,
                batches,
                hw,
            },
            Err(e) => FetchAns {
                error: Some(e),
                diverging: None,
                batches: Vec::new(),
                hw,
            },
        };
        let me = Node::B(b.id);
        self.send(me, Node::B(lp.from), Msg::FetchResp { rpc: lp.rpc, ans });
    }

    /// `handlers/fetch.rs` for a follower's fetch.
    fn handle_fetch(&mut self, bi: usize, from: Node, rpc: u64, req: FetchReq) {
        let me = Node::B(self.brokers[bi].id);
        let b = &self.brokers[bi];
        let part = b.part.as_ref().expect("running");
        let l = &part.l;
        let mut check = check_leader(l, req.current_leader_epoch);
        let diverging = if check.is_ok() {
            diverging_epoch(
                &b.cache,
                l.leader_epoch,
                leo(&b.log),
                req.last_fetched_epoch,
                req.fetch_offset,
            )
        } else {
            None
        };
        if check.is_ok() && diverging.is_none() {
            match self.follower_fetched(bi, req.replica, req.fetch_offset) {
                Err(e) => check = Err(e),
                Ok(()) => {
                    let in_isr = self.brokers[bi]
                        .part
                        .as_ref()
                        .is_some_and(|p| p.l.isr.contains(&req.replica));
                    if !in_isr {
                        self.maybe_alter_isr(bi);
                    }
                }
            }
        }
        let b = &self.brokers[bi];
        let hw = b.part.as_ref().map_or(-1, |p| p.hw);
        let ans = match (check, diverging) {
            (Err(e), _) => FetchAns {
                error: Some(e),
                diverging: None,
                batches: Vec::new(),
                hw: -1,
            },
            (Ok(()), Some(d)) => FetchAns {
                error: None,
                diverging: Some(d),
                batches: Vec::new(),
                hw,
            },
            (Ok(()), None) => match read_from(&b.log, req.fetch_offset, self.p.max_fetch_batches) {
                Ok(v) if v.is_empty() => {
                    // Nothing yet: the leader holds the fetch until an append or max wait.
                    self.brokers[bi].long_polls.push(LongPoll {
                        rpc,
                        from: req.replica,
                        fetch_offset: req.fetch_offset,
                        current_leader_epoch: req.current_leader_epoch,
                    });
                    self.btimer(bi, FETCH_MAX_WAIT, Timer::LongPollEnd { rpc });
                    return;
                }
                Ok(batches) => FetchAns {
                    error: None,
                    diverging: None,
                    batches,
                    hw,
                },
                Err(e) => FetchAns {
                    error: Some(e),
                    diverging: None,
                    batches: Vec::new(),
                    hw,
                },
            },
        };
        self.send(me, from, Msg::FetchResp { rpc, ans });
    }

    /// `handlers/produce.rs` with acks=all.
    fn handle_produce(&mut self, bi: usize, rpc: u64, payload: u64, records: i64) {
        let me = Node::B(self.brokers[bi].id);
        let b = &mut self.brokers[bi];
        let part = b.part.as_ref().expect("running");
        if part.l.role != Role::Leader {
            self.send(
                me,
                Node::Client,
                Msg::ProduceResp {
                    rpc,
                    result: Err(ProduceErr::NotLeader),
                },
            );
            return;
        }
        if part.l.isr.len() < MIN_INSYNC {
            self.send(
                me,
                Node::Client,
                Msg::ProduceResp {
                    rpc,
                    result: Err(ProduceErr::NotEnoughReplicas),
                },
            );
            return;
        }
        // Payload ids are unique across producers: a match is this producer's batch.
        let window = DEDUP_WINDOW * self.p.producers;
        let dup = b
            .log
            .iter()
            .rev()
            .take(window)
            .find(|x| x.payload == payload)
            .copied();
        let (base, upto) = match dup {
            Some(x) => (x.base, x.last + 1),
            None => {
                let base = leo(&b.log);
                let x = Batch {
                    base,
                    last: base + records - 1,
                    epoch: part.log_epoch,
                    payload,
                };
                b.log.push(x);
                b.cache.assign(x.epoch, x.base);
                let follows = part.hw_follows;
                let end = x.last + 1;
                let part = b.part.as_mut().expect("running");
                let raised = follows && end > part.hw;
                if raised {
                    part.hw = end;
                }
                self.note(|| format!("B{} appended {x:?}", bi + 1));
                if raised {
                    self.wake_waits(bi);
                }
                self.appended(bi);
                (base, end)
            }
        };
        let epoch = self.brokers[bi]
            .part
            .as_ref()
            .expect("running")
            .l
            .leader_epoch;
        self.brokers[bi].waits.push(Wait {
            rpc,
            base,
            upto,
            epoch,
        });
        let t = self.p.request_timeout;
        self.btimer(bi, t, Timer::ProduceDeadline { rpc });
        // `wait_replicated` checks once before it waits.
        self.wake_waits(bi);
    }

    // --- brokers: the fetcher -------------------------------------------------------------

    /// `ReplicaFetchers::reconcile` for the one partition.
    fn reconcile(&mut self, bi: usize) {
        let b = &mut self.brokers[bi];
        if b.proc_ != Proc::Running {
            return;
        }
        let Some(part) = b.part.as_ref() else {
            return;
        };
        let l = &part.l;
        let wanted = (l.role == Role::Follower && l.leader_id >= 0 && l.leader_id != b.id)
            .then_some(l.leader_id);
        let running = b.fetcher.as_ref().map(|f| f.leader);
        if running != wanted {
            b.fetcher = None;
            b.fetch_gen += 1;
            if let Some(leader) = wanted {
                b.fetcher = Some(Fetcher {
                    leader,
                    backoff: FETCH_BACKOFF_MIN,
                    idle: false,
                });
                self.fetch_round(bi);
            }
        } else if b.fetcher.as_ref().is_some_and(|f| f.idle) {
            // `wait_applied(next)`: the image changed.
            self.fetch_round(bi);
        }
    }

    /// One round of `ReplicaFetchers::run` / `fetch_round`.
    fn fetch_round(&mut self, bi: usize) {
        let b = &mut self.brokers[bi];
        let gen = b.fetch_gen;
        let Some(f) = b.fetcher.as_mut() else {
            return;
        };
        let Some(part) = b.part.as_ref() else {
            return;
        };
        let leader = f.leader;
        let reachable = b.image.brokers.get(&leader).is_some_and(|x| !x.fenced);
        let follows = part.l.role == Role::Follower && part.l.leader_id == leader;
        if !reachable || !follows {
            f.idle = true;
            self.btimer(bi, FETCH_BACKOFF_MAX, Timer::FetchRound { gen });
            return;
        }
        f.idle = false;
        let req = FetchReq {
            replica: b.id,
            current_leader_epoch: part.l.leader_epoch,
            fetch_offset: leo(&b.log),
            last_fetched_epoch: b.cache.latest_epoch().unwrap_or(-1),
        };
        let asked_at = part.l.leader_epoch;
        let rpc = self.rpc();
        let b = &mut self.brokers[bi];
        b.pending.insert(rpc, Pend::Fetch { gen, asked_at });
        let me = Node::B(b.id);
        self.send(me, Node::B(leader), Msg::FetchReq { rpc, req });
        self.btimer(bi, FETCH_CALL_TIMEOUT, Timer::RpcTimeout { rpc });
    }

    fn fetch_failed(&mut self, bi: usize, gen: u64, refused: bool) {
        let b = &mut self.brokers[bi];
        if gen != b.fetch_gen {
            return;
        }
        let Some(f) = b.fetcher.as_mut() else {
            return;
        };
        let leader = f.leader;
        let wait = f.backoff;
        f.backoff = (f.backoff * 2).min(FETCH_BACKOFF_MAX);
        if refused {
            self.report_refused(bi, leader);
        }
        self.btimer(bi, wait, Timer::FetchRound { gen });
    }

    /// `ReplicaFetchers::report_refused`.
    fn report_refused(&mut self, bi: usize, leader: i32) {
        let b = &mut self.brokers[bi];
        let Some(x) = b.image.brokers.get(&leader).filter(|x| !x.fenced) else {
            return;
        };
        let epoch = x.epoch;
        if b.reported
            .get(&leader)
            .is_some_and(|at| self.now.saturating_sub(*at) < REPORT_EVERY)
        {
            return;
        }
        b.reported.insert(leader, self.now);
        let req = CtlReq::ReportUnreachable {
            reporter: b.id,
            broker: leader,
            epoch,
        };
        self.submit(bi, Submit::Report, req, self.now + SUBMIT_TIMEOUT);
    }

    fn on_fetch_resp(&mut self, bi: usize, rpc: u64, ans: FetchAns) {
        let b = &mut self.brokers[bi];
        let Some(Pend::Fetch { gen, asked_at }) = b.pending.remove(&rpc) else {
            return;
        };
        if gen != b.fetch_gen || b.fetcher.is_none() {
            return;
        }
        let Some(part) = b.part.as_ref() else {
            return;
        };
        let mut progress = false;
        // The leadership moved while the fetch was out: the answer is stale.
        if part.l.role == Role::Follower && part.l.leader_epoch == asked_at {
            match (ans.error, ans.diverging) {
                (None, Some((epoch, end))) => {
                    progress = true;
                    self.truncate_diverged(bi, epoch, end);
                }
                (None, None) => {
                    progress = true;
                    self.apply_fetched(bi, &ans.batches, ans.hw);
                }
                (Some(FetchErr::OutOfRange), _) => {
                    progress = true;
                    self.out_of_range(bi, ans.hw);
                }
                (Some(_), _) => {}
            }
        }
        let b = &mut self.brokers[bi];
        if let Some(f) = b.fetcher.as_mut() {
            f.backoff = FETCH_BACKOFF_MIN;
        }
        if gen != self.brokers[bi].fetch_gen {
            return;
        }
        if progress {
            self.fetch_round(bi);
        } else {
            self.btimer(bi, FETCH_BACKOFF_MIN, Timer::FetchRound { gen });
        }
    }

    /// `fetcher.rs` `apply`: append as follower, then the leader's high watermark.
    fn apply_fetched(&mut self, bi: usize, batches: &[Batch], leader_hw: i64) {
        let b = &mut self.brokers[bi];
        if !batches.is_empty() {
            // `check_follower_offsets`.
            let mut next = leo(&b.log);
            for x in batches {
                if x.base < next {
                    let msg = format!(
                        "B{}: follower append refused: batch at {} below {next}",
                        b.id, x.base
                    );
                    self.anomaly("follower_append_refused", msg);
                    return;
                }
                next = x.last + 1;
            }
            for x in batches {
                b.log.push(*x);
                b.cache.assign(x.epoch, x.base);
            }
            let part = b.part.as_mut().expect("partition");
            let end = leo(&b.log);
            let raised = part.hw_follows && end > part.hw;
            if raised {
                part.hw = end;
                self.wake_waits(bi);
            }
            self.appended(bi);
        }
        let b = &mut self.brokers[bi];
        let end = leo(&b.log);
        let part = b.part.as_mut().expect("partition");
        let target = leader_hw.min(end);
        if target > part.hw {
            part.hw = target;
            self.wake_waits(bi);
        }
    }

    /// `PartitionLog::truncate_to`.
    fn truncate_to(&mut self, bi: usize, at: i64, why: &str) {
        let b = &mut self.brokers[bi];
        let end = leo(&b.log);
        if at >= end {
            b.cache.truncate_from_end(end);
            return;
        }
        let keep = b.log.partition_point(|x| x.last < at);
        b.log.truncate(keep);
        b.trunc_ver += 1;
        let new_end = leo(&b.log);
        b.cache.truncate_from_end(new_end);
        b.flushed = b.flushed.min(new_end);
        let part = b.part.as_mut().expect("partition");
        let hw = part.hw;
        part.hw = hw.min(new_end);
        let id = b.id;
        self.stats.truncations += 1;
        self.note(|| format!("B{id} TRUNCATED {end} -> {new_end} ({why}, hw was {hw})"));
        if new_end < hw {
            self.anomaly(
                "truncated_below_hw",
                format!("B{id} truncated to {new_end} below its high watermark {hw} ({why})"),
            );
        }
    }

    /// `fetcher.rs` `truncate_diverged`.
    fn truncate_diverged(&mut self, bi: usize, epoch: i32, end: i64) {
        let b = &self.brokers[bi];
        let before = leo(&b.log);
        let (local_epoch, local_end) = b.cache.end_offset_for(epoch, before);
        let at = truncation_point(epoch, end, local_epoch, local_end, before);
        self.truncate_to(
            bi,
            at,
            &format!("diverging epoch {epoch} ends at {end} on the leader"),
        );
    }

    /// `fetcher.rs` `out_of_range` (log starts are always 0 here).
    fn out_of_range(&mut self, bi: usize, leader_hw: i64) {
        let end = leo(&self.brokers[bi].log);
        if end > leader_hw {
            self.truncate_to(
                bi,
                leader_hw,
                "offset out of range: to the leader's high watermark",
            );
        }
    }

    // --- message and timer dispatch ---------------------------------------------------

    fn deliver_broker(&mut self, bi: usize, from: Node, msg: Msg) {
        let b = &self.brokers[bi];
        if b.host_down {
            return;
        }
        let me = Node::B(b.id);
        if msg.is_request() && b.proc_ == Proc::Down {
            // Nothing listens: refused.
            self.send(
                me,
                from,
                Msg::ConnErr {
                    rpc: msg.rpc(),
                    refused: true,
                },
            );
            return;
        }
        if b.proc_ == Proc::Down {
            return;
        }
        match msg {
            Msg::FetchReq { rpc, req } => self.handle_fetch(bi, from, rpc, req),
            Msg::ProduceReq {
                rpc,
                payload,
                records,
            } => self.handle_produce(bi, rpc, payload, records),
            Msg::MetadataReq { rpc } => {
                let p = partition_of(&b.image);
                let leader = b.image.reported_leader(p).unwrap_or(-1);
                self.send(me, from, Msg::MetadataResp { rpc, leader });
            }
            Msg::MetaUpdate { upto } => self.on_meta_update(bi, upto),
            Msg::CtlResp { rpc, result, index } => self.on_ctl_resp(bi, rpc, result, index),
            Msg::FetchResp { rpc, ans } => self.on_fetch_resp(bi, rpc, ans),
            Msg::ConnErr { rpc, refused } => {
                if let Some(Pend::Fetch { gen, .. }) = self.brokers[bi].pending.remove(&rpc) {
                    self.fetch_failed(bi, gen, refused);
                }
            }
            other => panic!("unexpected at a broker: {other:?}"),
        }
    }

    fn broker_timer(&mut self, bi: usize, timer: Timer) {
        let running = self.brokers[bi].proc_ == Proc::Running;
        match timer {
            Timer::Heartbeat if running => {
                let b = &self.brokers[bi];
                let req = CtlReq::Heartbeat {
                    id: b.id,
                    epoch: b.broker_epoch,
                    applied: b.meta_applied,
                };
                let deadline = self.now + 2 * self.p.heartbeat;
                self.submit(bi, Submit::Heartbeat, req, deadline);
            }
            Timer::IsrCheck if running => {
                let leads = self.brokers[bi]
                    .part
                    .as_ref()
                    .is_some_and(|p| p.l.role == Role::Leader && p.l.replicas.len() > 1);
                if leads {
                    self.maybe_alter_isr(bi);
                }
                let t = self.p.isr_check;
                self.btimer(bi, t, Timer::IsrCheck);
            }
            Timer::Flush if running => {
                let b = &mut self.brokers[bi];
                b.flushed = leo(&b.log);
                let t = self.p.flush_every;
                self.btimer(bi, t, Timer::Flush);
            }
            Timer::HwCheckpoint if running => {
                // `TopicRegistry::checkpoint_high_watermarks`: every local replica's HW.
                let b = &mut self.brokers[bi];
                if let Some(hw) = b.part.as_ref().map(|p| p.hw) {
                    b.hw_checkpoint = Some(hw);
                }
                self.btimer(bi, HW_CHECKPOINT_EVERY, Timer::HwCheckpoint);
            }
            Timer::RegisterRetry if self.brokers[bi].proc_ == Proc::Registering => {
                self.register(bi, Submit::Register)
            }
            Timer::FetchRound { gen } if running && gen == self.brokers[bi].fetch_gen => {
                self.fetch_round(bi)
            }
            Timer::RpcTimeout { rpc } => self.on_rpc_timeout(bi, rpc),
            Timer::LongPollEnd { rpc } => {
                let b = &mut self.brokers[bi];
                if let Some(i) = b.long_polls.iter().position(|lp| lp.rpc == rpc) {
                    let lp = b.long_polls.remove(i);
                    let read = read_from(&b.log, lp.fetch_offset, self.p.max_fetch_batches);
                    self.answer_poll(bi, lp, read);
                }
            }
            Timer::ProduceDeadline { rpc } => {
                let b = &mut self.brokers[bi];
                if let Some(i) = b.waits.iter().position(|w| w.rpc == rpc) {
                    b.waits.remove(i);
                    let me = Node::B(b.id);
                    self.send(
                        me,
                        Node::Client,
                        Msg::ProduceResp {
                            rpc,
                            result: Err(ProduceErr::TimedOut),
                        },
                    );
                }
            }
            Timer::AwaitTimeout { rpc } => {
                let b = &mut self.brokers[bi];
                if let Some(i) = b.awaiting.iter().position(|a| a.rpc == rpc) {
                    let a = b.awaiting.remove(i);
                    self.submit_done(bi, a.kind, Err(CtlErr::Timeout));
                }
            }
            _ => {}
        }
    }

    // --- the client -----------------------------------------------------------------------

    fn client_next(&mut self, p: usize) {
        if self.client.pending.values().any(|(q, _)| *q == p) {
            return;
        }
        if self.client.producers[p].cur.is_none() {
            if !self.client.producing {
                return;
            }
            let payload = self.client.next_payload;
            self.client.next_payload += 1;
            let records = self.rng.range(1, 5) as i64;
            self.client.producers[p].cur = Some(Cur {
                payload,
                records,
                first_try: self.now,
            });
        }
        let rpc = self.rpc();
        match self.client.producers[p].leader {
            None => {
                let b = self.rng.broker();
                self.client.pending.insert(rpc, (p, CPend::Metadata));
                self.send(Node::Client, Node::B(b), Msg::MetadataReq { rpc });
                self.timer(Node::Client, 0, SEC, Timer::RpcTimeout { rpc });
            }
            Some(l) => {
                let cur = self.client.producers[p].cur.as_ref().expect("batch");
                let msg = Msg::ProduceReq {
                    rpc,
                    payload: cur.payload,
                    records: cur.records,
                };
                self.client.pending.insert(rpc, (p, CPend::Produce));
                self.send(Node::Client, Node::B(l), msg);
                let t = self.p.request_timeout + SEC;
                self.timer(Node::Client, 0, t, Timer::RpcTimeout { rpc });
            }
        }
    }

    fn client_retry(&mut self, p: usize) {
        let prod = &mut self.client.producers[p];
        prod.leader = None;
        if let Some(cur) = &prod.cur {
            if self.now.saturating_sub(cur.first_try) > self.p.delivery_timeout {
                let payload = cur.payload;
                prod.cur = None;
                self.stats.given_up += 1;
                self.note(|| format!("CLIENT gave up payload {payload}"));
            }
        }
        self.timer(Node::Client, 0, RETRY_BACKOFF, Timer::ClientNext { p });
    }

    fn deliver_client(&mut self, msg: Msg) {
        let rpc = msg.rpc();
        let Some((p, kind)) = self.client.pending.remove(&rpc) else {
            return;
        };
        match (kind, msg) {
            (CPend::Admin, _) => {}
            (CPend::Metadata, Msg::MetadataResp { leader, .. }) => {
                self.client.producers[p].leader = (leader >= 0).then_some(leader);
                let after = if leader >= 0 { 0 } else { RETRY_BACKOFF };
                self.timer(Node::Client, 0, after, Timer::ClientNext { p });
            }
            (
                CPend::Produce,
                Msg::ProduceResp {
                    result: Ok(base), ..
                },
            ) => {
                let cur = self.client.producers[p].cur.take().expect("batch");
                let x = Batch {
                    base,
                    last: base + cur.records - 1,
                    epoch: -1,
                    payload: cur.payload,
                };
                self.ack(x);
                let gap = self.rng.range(self.p.produce_gap.0, self.p.produce_gap.1);
                self.timer(Node::Client, 0, gap, Timer::ClientNext { p });
            }
            (_, msg) => {
                self.note(|| format!("CLIENT {p} failed: {msg:?}"));
                self.client_retry(p);
            }
        }
    }

    fn ack(&mut self, x: Batch) {
        self.stats.acked += 1;
        self.note(|| format!("CLIENT ACKED {x:?}"));
        if let Some(prev) = self.acked.get(&x.base) {
            let msg = format!("offset {} acknowledged twice: {prev:?} and {x:?}", x.base);
            self.fail("1", msg);
            return;
        }
        self.acked.insert(x.base, x);
        self.acked_list.push(x);
    }

    fn client_timer(&mut self, timer: Timer) {
        match timer {
            Timer::ClientNext { p } => self.client_next(p),
            Timer::RpcTimeout { rpc } => {
                if let Some((p, kind)) = self.client.pending.remove(&rpc) {
                    if !matches!(kind, CPend::Admin) {
                        self.client_retry(p);
                    }
                }
            }
            other => panic!("client timer {other:?}"),
        }
    }

    // --- faults -------------------------------------------------------------------------------

    fn fault(&mut self, f: Fault) {
        let mut effective = true;
        match &f {
            Fault::Crash { b, id } | Fault::PowerLoss { b, id } => {
                let bi = (*b - 1) as usize;
                if self.brokers[bi].proc_ == Proc::Down {
                    effective = false;
                } else {
                    self.brokers[bi].crash_id = *id;
                    self.crash(bi, matches!(f, Fault::PowerLoss { .. }));
                }
            }
            Fault::Restart { b, id } => {
                let bi = (*b - 1) as usize;
                if self.brokers[bi].proc_ == Proc::Down && self.brokers[bi].crash_id == *id {
                    self.restart(bi);
                }
            }
            Fault::Pause { b } => {
                let x = &mut self.brokers[(*b - 1) as usize];
                if x.proc_ == Proc::Down {
                    effective = false;
                } else {
                    x.pause_depth += 1;
                }
            }
            Fault::Resume { b } => self.resume(*b, false),
            Fault::Isolate { b } => self.net.isolated[*b as usize] += 1,
            Fault::Rejoin { b } => {
                let c = &mut self.net.isolated[*b as usize];
                *c = c.saturating_sub(1);
            }
            Fault::Cut { a, z } => {
                let key = if a < z { (*a, *z) } else { (*z, *a) };
                *self.net.cuts.entry(key).or_default() += 1;
            }
            Fault::Mend { a, z } => {
                let key = if a < z { (*a, *z) } else { (*z, *a) };
                if let Some(c) = self.net.cuts.get_mut(&key) {
                    *c = c.saturating_sub(1);
                }
            }
            Fault::Slow { n, extra_us } => {
                self.net.slow.insert(*n, *extra_us);
            }
            Fault::Fast { n } => {
                self.net.slow.remove(n);
            }
            Fault::ClockJump { b, ms } => self.brokers[(*b - 1) as usize].clock_offset_ms += ms,
            Fault::CtlClockJump { ms } => self.ctl.clock_jump += ms * MS,
            Fault::Elect => {
                let rpc = self.rpc();
                self.client.pending.insert(rpc, (usize::MAX, CPend::Admin));
                self.send(
                    Node::Client,
                    Node::Ctl,
                    Msg::CtlReq {
                        rpc,
                        req: CtlReq::ElectPreferred,
                    },
                );
            }
            Fault::Reassign { replicas } => {
                let rpc = self.rpc();
                self.client.pending.insert(rpc, (usize::MAX, CPend::Admin));
                let req = CtlReq::Reassign(replicas.clone());
                self.send(Node::Client, Node::Ctl, Msg::CtlReq { rpc, req });
            }
        }
        if effective {
            if let Some(k) = f.kind() {
                *self.stats.faults.entry(k).or_default() += 1;
            }
        }
    }

    fn resume(&mut self, b: i32, all: bool) {
        let x = &mut self.brokers[(b - 1) as usize];
        if x.pause_depth == 0 {
            return;
        }
        x.pause_depth = if all { 0 } else { x.pause_depth - 1 };
        if x.pause_depth == 0 {
            let held = std::mem::take(&mut x.held);
            for ev in held {
                self.push(self.now, ev);
            }
        }
    }

    /// The end of the fault phase: everything heals, crashed brokers restart, the producer
    /// makes no new batch (the one it has is retried as before).
    fn end_faults(&mut self) {
        self.ended = true;
        self.client.producing = false;
        for b in BROKERS {
            self.resume(b, true);
        }
        self.net = Net::default();
        for bi in 0..3 {
            if self.brokers[bi].proc_ == Proc::Down {
                self.restart(bi);
            }
        }
        self.note(|| "END OF FAULTS: all healed".into());
        self.timer(Node::Ctl, 0, 250 * MS, Timer::Converge);
    }

    fn is_converged(&self) -> bool {
        if self.client.producers.iter().any(|p| p.cur.is_some()) {
            return false;
        }
        let p = partition_of(&self.ctl.image);
        if p.leader < 0 || p.isr.len() != 3 {
            return false;
        }
        let lb = &self.brokers[(p.leader - 1) as usize];
        let Some(lp) = lb.part.as_ref() else {
            return false;
        };
        if lp.l.role != Role::Leader || lp.l.leader_epoch != p.leader_epoch || lp.hw != leo(&lb.log)
        {
            return false;
        }
        self.brokers.iter().all(|b| {
            b.proc_ == Proc::Running
                && b.pause_depth == 0
                && b.log == lb.log
                && b.part
                    .as_ref()
                    .is_some_and(|x| x.hw == lp.hw && x.l.leader_epoch == p.leader_epoch)
        })
    }

    // --- invariants -----------------------------------------------------------------------

    fn check(&mut self) {
        // (3) HW ≤ LEO everywhere; a leader's HW never goes down within its epoch. And what
        // a leader has below its HW is committed (consumers may read it).
        let mut problems: Vec<(&str, String)> = Vec::new();
        for bi in 0..3 {
            let b = &self.brokers[bi];
            let Some(part) = b.part.as_ref() else {
                continue;
            };
            let end = leo(&b.log);
            if part.hw > end {
                problems.push((
                    "3",
                    format!("B{}: high watermark {} above log end {end}", b.id, part.hw),
                ));
            }
            // A leader that does not serve yet (restarted, registering) commits nothing.
            if part.l.role != Role::Leader || b.proc_ != Proc::Running {
                continue;
            }
            let (epoch, hw) = (part.l.leader_epoch, part.hw);
            if let Some((e, h)) = self.checks.leader_hw[bi] {
                if e == epoch && hw < h {
                    problems.push((
                        "3",
                        format!("B{}: leader high watermark went down from {h} to {hw} at epoch {epoch}", b.id),
                    ));
                }
            }
            self.checks.leader_hw[bi] = Some((epoch, hw));
            let key = (epoch, b.trunc_ver, b.inc);
            let mut from = match self.checks.scanned[bi] {
                Some((e, t, i, n)) if (e, t, i) == key => n,
                _ => 0,
            };
            let mut newly = Vec::new();
            while from < b.log.len() && b.log[from].last < hw {
                newly.push(b.log[from]);
                from += 1;
            }
            self.checks.scanned[bi] = Some((key.0, key.1, key.2, from));
            for x in newly {
                match self.committed.get(&x.base) {
                    Some(prev) if prev == &x => {}
                    Some(prev) => {
                        problems.push((
                            "1b",
                            format!(
                                "offset {} committed as {prev:?} and, by leader B{} at epoch {epoch}, as {x:?}",
                                x.base,
                                bi + 1
                            ),
                        ));
                    }
                    None => {
                        self.committed.insert(x.base, x);
                        self.committed_list.push(x);
                    }
                }
            }
        }
        for (inv, msg) in problems {
            self.fail(inv, msg);
        }
        // (1) every acknowledged (and committed) batch is in the current leader's log.
        let p = partition_of(&self.ctl.image);
        let leader = p.leader;
        if leader >= 0 {
            let lb = &self.brokers[(leader - 1) as usize];
            let (mut a, mut c) = match self.checks.leader {
                Some((l, t, a, c)) if l == leader && t == lb.trunc_ver => (a, c),
                _ => (0, 0),
            };
            let mut problems = Vec::new();
            let power = self.opts.power_loss;
            while a < self.acked_list.len() {
                let x = self.acked_list[a];
                if !holds(&lb.log, &x) && (!power || self.lost.insert((true, x.base, x.payload))) {
                    problems.push((
                        "1",
                        format!(
                            "acknowledged {x:?} missing from leader B{leader} (epoch {}): it has {:?}",
                            p.leader_epoch,
                            around(&lb.log, x.base)
                        ),
                    ));
                }
                a += 1;
            }
            while c < self.committed_list.len() {
                let x = self.committed_list[c];
                if !holds(&lb.log, &x) && (!power || self.lost.insert((false, x.base, x.payload))) {
                    problems.push((
                        "1b",
                        format!(
                            "committed {x:?} missing from leader B{leader} (epoch {}): it has {:?}",
                            p.leader_epoch,
                            around(&lb.log, x.base)
                        ),
                    ));
                }
                c += 1;
            }
            self.checks.leader = Some((leader, lb.trunc_ver, a, c));
            for (inv, msg) in problems {
                self.fail(inv, msg);
            }
        } else {
            self.checks.leader = None;
        }
        // (2) replicas agree below the smaller of their HWs.
        for (x, y) in [(0usize, 1usize), (0, 2), (1, 2)] {
            let (bx, by) = (&self.brokers[x], &self.brokers[y]);
            let (Some(px), Some(py)) = (bx.part.as_ref(), by.part.as_ref()) else {
                continue;
            };
            let m = px.hw.min(py.hw);
            let mut k = match self.checks.pairs.get(&(x, y)) {
                Some((tx, ty, k)) if *tx == bx.trunc_ver && *ty == by.trunc_ver => *k,
                _ => 0,
            };
            let mut bad = None;
            while k < bx.log.len() && k < by.log.len() && bx.log[k].base < m {
                if bx.log[k] != by.log[k] {
                    bad = Some(format!(
                        "B{} and B{} differ below their high watermarks ({} and {}): {:?} vs {:?}",
                        x + 1,
                        y + 1,
                        px.hw,
                        py.hw,
                        bx.log[k],
                        by.log[k]
                    ));
                    k = usize::MAX - 1;
                    break;
                }
                k += 1;
            }
            self.checks
                .pairs
                .insert((x, y), (bx.trunc_ver, by.trunc_ver, k));
            if let Some(msg) = bad {
                self.fail("2", msg);
            }
        }
    }

    /// The end state once converged: every replica holds every acknowledged batch, and the
    /// three logs are identical.
    fn final_check(&mut self) {
        let mut problems = Vec::new();
        for b in &self.brokers {
            for x in &self.acked_list {
                if !holds(&b.log, x) {
                    problems.push((
                        "1",
                        format!("after the final heal B{} lacks acknowledged {x:?}", b.id),
                    ));
                }
            }
            for x in &self.committed_list {
                if !holds(&b.log, x) {
                    problems.push((
                        "1b",
                        format!("after the final heal B{} lacks committed {x:?}", b.id),
                    ));
                }
            }
            if b.log != self.brokers[0].log {
                problems.push((
                    "2",
                    format!("after the final heal B{} and B1 hold different logs", b.id),
                ));
            }
        }
        for (inv, msg) in problems {
            self.fail(inv, msg);
        }
    }

    // --- the loop -------------------------------------------------------------------------

    fn digest_event(&mut self, ev: &Ev) {
        let mut h = mix(self.digest, self.now);
        h = match ev {
            Ev::Deliver { from, to, msg } => mix(
                mix(
                    mix(h, 1 + node_code(*from) * 16 + node_code(*to) * 256),
                    msg.code(),
                ),
                msg.rpc(),
            ),
            Ev::Timer { node, inc, timer } => mix(
                mix(h, 2 + node_code(*node) * 16 + ((*inc as u64) << 12)),
                timer.code(),
            ),
            Ev::Fault(f) => mix(h, 3 + (f.kind().map_or(0, |k| k.len() as u64) << 4)),
            Ev::EndFaults => mix(h, 4),
        };
        self.digest = h;
    }

    fn step(&mut self, ev: Ev) {
        // A paused broker runs nothing: what reaches it waits (timers, and messages the
        // network delivered) until it resumes.
        let target = match &ev {
            Ev::Deliver { to: Node::B(b), .. }
            | Ev::Timer {
                node: Node::B(b), ..
            } => Some((*b - 1) as usize),
            _ => None,
        };
        if let Ev::Deliver { from, to, .. } = &ev {
            if !self.link_up(*from, *to) {
                self.note(|| "  (dropped: the link is down)".into());
                return;
            }
        }
        if let Some(bi) = target {
            let b = &mut self.brokers[bi];
            if let Ev::Timer { inc, .. } = &ev {
                if *inc != b.inc {
                    return;
                }
            }
            if b.proc_ != Proc::Down && b.pause_depth > 0 {
                b.held.push(ev);
                return;
            }
            let request = matches!(&ev, Ev::Deliver { msg, .. } if msg.is_request());
            if request && matches!(b.proc_, Proc::CatchingUp | Proc::Registering) {
                b.backlog.push(ev);
                return;
            }
        }
        match ev {
            Ev::Deliver { from, to, msg } => match to {
                Node::B(b) => self.deliver_broker((b - 1) as usize, from, msg),
                Node::Ctl => match msg {
                    Msg::CtlReq { rpc, req } => self.ctl_request(from, rpc, req),
                    other => panic!("unexpected at the controller: {other:?}"),
                },
                Node::Client => self.deliver_client(msg),
            },
            Ev::Timer { node, timer, .. } => match node {
                Node::B(b) => self.broker_timer((b - 1) as usize, timer),
                Node::Ctl => self.ctl_timer(timer),
                Node::Client => self.client_timer(timer),
            },
            Ev::Fault(f) => self.fault(f),
            Ev::EndFaults => self.end_faults(),
        }
    }

    fn run(mut self) -> Outcome {
        let mut failure = None;
        while let Some(s) = self.queue.pop() {
            self.now = s.at;
            self.stats.events += 1;
            self.digest_event(&s.ev);
            if self.opts.verbose {
                let line = format!(
                    "{} #{:<7} {}",
                    fmt_t(self.now),
                    self.stats.events,
                    describe(&s.ev)
                );
                self.trace.push(line);
            }
            self.step(s.ev);
            self.check();
            if self.failure.is_none() && self.converged {
                self.final_check();
                if self.failure.is_none() {
                    break;
                }
            }
            if self.failure.is_none() && self.now > self.hard_end {
                self.failure = Some(format!(
                    "no convergence {} s after the faults ended: {}",
                    (self.now - self.p.fault_end) / SEC,
                    self.state()
                ));
            }
            if self.failure.is_none() && self.stats.events > EVENT_BUDGET {
                self.failure = Some(format!(
                    "event budget exhausted (a livelock?): {}",
                    self.state()
                ));
            }
            if let Some(f) = self.failure.take() {
                failure = Some((self.stats.events, f));
                break;
            }
        }
        Outcome {
            stats: self.stats,
            digest: self.digest,
            failure,
            trace: self.trace,
            schedule: self.schedule,
            params: self.p,
        }
    }

    fn state(&self) -> String {
        let mut s = String::new();
        let p = partition_of(&self.ctl.image);
        let _ = write!(
            s,
            "seed {}, controller: leader {} epoch {} isr {:?} replicas {:?}; ",
            self.seed, p.leader, p.leader_epoch, p.isr, p.replicas
        );
        for b in &self.brokers {
            let _ = write!(
                s,
                "B{} {:?}{} leo {} hw {:?} role {:?} epoch {:?} cache {:?}; ",
                b.id,
                b.proc_,
                if b.pause_depth > 0 { " paused" } else { "" },
                leo(&b.log),
                b.part.as_ref().map(|x| x.hw),
                b.part.as_ref().map(|x| x.l.role),
                b.part.as_ref().map(|x| x.l.leader_epoch),
                b.cache.entries(),
            );
        }
        s
    }
}

fn endpoint(id: i32) -> Endpoint {
    Endpoint {
        name: "PLAINTEXT".into(),
        host: format!("b{id}"),
        port: 9092,
        security_protocol: 0,
    }
}

/// The batches of `log` around `offset` (for messages).
fn around(log: &[Batch], offset: i64) -> Vec<Batch> {
    let i = log.partition_point(|b| b.last < offset);
    log[i.saturating_sub(1)..(i + 2).min(log.len())].to_vec()
}

fn describe(ev: &Ev) -> String {
    match ev {
        Ev::Deliver { from, to, msg } => format!("{from:?} -> {to:?} {msg:?}"),
        Ev::Timer { node, timer, .. } => format!("{node:?} timer {timer:?}"),
        Ev::Fault(f) => format!("FAULT {f:?}"),
        Ev::EndFaults => "END OF FAULTS".into(),
    }
}

/// `controller.rs` `decide` for AlterPartition (the controller needs Raft to be built, so
/// its checks are repeated here; the records are what it would write, with the real
/// `reassign::complete_if_caught_up`).
fn alter_partition(
    image: &MetadataImage,
    topic_id: Uuid,
    broker_id: i32,
    broker_epoch: i64,
    (leader_epoch, partition_epoch): (i32, i32),
    isr: Vec<i32>,
    rules: &Rules,
) -> Result<Vec<MetaRecord>, CtlErr> {
    match image.brokers.get(&broker_id) {
        Some(b) if b.epoch == broker_epoch && !b.fenced => {}
        _ => return Err(CtlErr::StaleBrokerEpoch),
    }
    let p = &image.topics[&topic_id].partitions[0];
    if p.leader != broker_id || p.leader_epoch != leader_epoch {
        return Err(CtlErr::Refused("not the leader at that epoch".into()));
    }
    if p.partition_epoch != partition_epoch {
        return Err(CtlErr::Refused("stale partition epoch".into()));
    }
    if !isr.contains(&broker_id) || isr.iter().any(|r| !p.replicas.contains(r)) {
        return Err(CtlErr::Refused(
            "the ISR must hold the leader and only replicas".into(),
        ));
    }
    if isr
        .iter()
        .any(|r| !p.isr.contains(r) && image.brokers.get(r).is_none_or(|b| b.fenced))
    {
        return Err(CtlErr::Refused("a joining replica is fenced".into()));
    }
    let mut sorted = isr;
    sorted.sort_unstable();
    sorted.dedup();
    if let Some(records) = reassign::complete_if_caught_up(image, topic_id, 0, p, &sorted) {
        return Ok(records);
    }
    let t = &image.topics[&topic_id];
    Ok(vec![election::isr_change(t, 0, p, rules, sorted)])
}

// ---------------------------------------------------------------------------------------
// Running seeds.
// ---------------------------------------------------------------------------------------

/// `Partition::check_leader` for a fetch at the request's `current_leader_epoch` (-1: none).
fn check_leader(l: &Leadership, epoch: i32) -> Result<(), FetchErr> {
    if epoch != -1 && epoch < l.leader_epoch {
        Err(FetchErr::FencedEpoch)
    } else if epoch != -1 && epoch > l.leader_epoch {
        Err(FetchErr::UnknownEpoch)
    } else if l.role != Role::Leader {
        Err(FetchErr::NotLeader)
    } else {
        Ok(())
    }
}

fn simulate(seed: u64, opts: &Options) -> Outcome {
    Sim::new(seed, opts.clone()).run()
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

fn env_options() -> Options {
    let on = |name: &str| std::env::var(name).is_ok_and(|v| v == "1" || v == "true");
    // `OTTLA_SIM_REAL`: the switches' name before the fixes (then "the real behaviour").
    let wanted = std::env::var("OTTLA_SIM_OLD")
        .or_else(|_| std::env::var("OTTLA_SIM_REAL"))
        .unwrap_or_default();
    let old = |bug: &str| {
        wanted
            .split(',')
            .any(|w| w.trim() == bug || w.trim() == "all")
    };
    Options {
        power_loss: on("OTTLA_SIM_POWER_LOSS"),
        old_restart_hw: old("restart_hw"),
        old_isr_expansion: old("isr_expansion"),
        old_produce_wait: old("produce_wait"),
        old_long_poll: old("long_poll"),
        unclean: false,
        no_elr: on("OTTLA_SIM_NO_ELR"),
        verbose: false,
        unchecked: std::env::var("OTTLA_SIM_UNCHECKED")
            .unwrap_or_default()
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect(),
    }
}

fn summary(seeds: u64, stats: &Stats, failures: u64, secs: f64) -> String {
    let faults: Vec<String> = stats
        .faults
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let anomalies: u64 = stats.anomalies.values().sum();
    let named: Vec<String> = stats
        .anomalies
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    format!(
        "SIMULATION: seeds {seeds}, events {}, faults [{}], acknowledged batches {}, given up {}, elections {}, truncations {}, metadata entries {}, anomalies {anomalies}{}, failed seeds {failures}, {secs:.1} s",
        stats.events,
        faults.join(" "),
        stats.acked,
        stats.given_up,
        stats.elections,
        stats.truncations,
        stats.commits,
        if named.is_empty() { String::new() } else { format!(" [{}]", named.join(" ")) },
    )
}

/// Prints everything about one seed's failure and checks that it replays identically.
fn report_failure(seed: u64, opts: &Options, first: &Outcome) -> String {
    let mut verbose = opts.clone();
    verbose.verbose = true;
    let a = simulate(seed, &verbose);
    let b = simulate(seed, &verbose);
    assert_eq!(
        a.digest, first.digest,
        "seed {seed}: a verbose rerun took another path"
    );
    assert_eq!(
        a.failure, first.failure,
        "seed {seed}: a rerun failed differently"
    );
    assert_eq!(
        a.trace, b.trace,
        "seed {seed}: two reruns traced differently"
    );
    let (at, what) = a.failure.clone().expect("it fails");
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
    let path = dir.join(format!("sim-replication-seed-{seed}.trace"));
    let _ = std::fs::write(&path, a.trace.join("\n"));
    let mut out = String::new();
    let _ = writeln!(out, "SIM FAILURE seed {seed} at event #{at}: {what}");
    let _ = writeln!(out, "options: {opts:?}");
    let _ = writeln!(out, "params: {:?}", a.params);
    let _ = writeln!(out, "schedule:");
    for (t, f) in &a.schedule {
        let _ = writeln!(out, "  {} {f:?}", fmt_t(*t));
    }
    let tail = a.trace.len().saturating_sub(120);
    let _ = writeln!(
        out,
        "trace (last {} of {} lines; the whole trace in {}; replay with OTTLA_SIM_SEED={seed}):",
        a.trace.len() - tail,
        a.trace.len(),
        path.display()
    );
    for l in &a.trace[tail..] {
        let _ = writeln!(out, "  {l}");
    }
    out
}

fn run_seeds(seeds: std::ops::Range<u64>, opts: &Options) -> (Stats, Vec<(u64, Outcome)>) {
    let mut total = Stats::default();
    let mut failures = Vec::new();
    for seed in seeds {
        let o = simulate(seed, opts);
        if seed % 97 == 0 && o.failure.is_none() {
            let again = simulate(seed, opts);
            assert_eq!(again.digest, o.digest, "seed {seed} is not deterministic");
        }
        total.add(&o.stats);
        if o.failure.is_some() {
            failures.push((seed, o));
        }
    }
    (total, failures)
}

/// The simulation over many seeds: 2,000 by default; `OTTLA_SIM_SEEDS=N` runs N,
/// `OTTLA_SIM_SEED=S` replays seed S alone and prints its parameters, fault schedule and
/// whole trace. `OTTLA_SIM_POWER_LOSS=1`, `OTTLA_SIM_OLD=restart_hw,isr_expansion,
/// produce_wait,long_poll` (or `all`; `OTTLA_SIM_REAL` is an alias) and `OTTLA_SIM_UNCHECKED=2,...`
/// set the [`Options`] of those names.
#[test]
fn replication_survives_simulated_faults() {
    let opts = env_options();
    if let Some(seed) = env_u64("OTTLA_SIM_SEED") {
        let mut verbose = opts.clone();
        verbose.verbose = true;
        let o = simulate(seed, &verbose);
        let again = simulate(seed, &verbose);
        assert_eq!(
            o.trace, again.trace,
            "seed {seed} does not replay identically"
        );
        println!(
            "seed {seed} options {opts:?}\nparams {:?}\nschedule:",
            o.params
        );
        for (t, f) in &o.schedule {
            println!("  {} {f:?}", fmt_t(*t));
        }
        println!("trace:");
        for l in &o.trace {
            println!("  {l}");
        }
        println!("{}", summary(1, &o.stats, o.failure.is_some() as u64, 0.0));
        if let Some((at, f)) = o.failure {
            panic!("seed {seed} fails at event #{at}: {f}");
        }
        return;
    }
    let n = env_u64("OTTLA_SIM_SEEDS").unwrap_or(2000);
    let started = std::time::Instant::now();
    let (stats, failures) = run_seeds(0..n, &opts);
    let secs = started.elapsed().as_secs_f64();
    println!("{}", summary(n, &stats, failures.len() as u64, secs));
    for (seed, o) in failures.iter().take(100) {
        let (at, what) = o.failure.as_ref().expect("failed");
        println!("failed seed {seed} at event #{at}: {what}");
    }
    if let Some((seed, o)) = failures.first() {
        let seeds: Vec<u64> = failures.iter().map(|(s, _)| *s).collect();
        let report = report_failure(*seed, &opts, o);
        panic!("{report}\nfailing seeds: {seeds:?}");
    }
    assert!(
        stats.acked > n,
        "the producers got almost nothing acknowledged: a vacuous run"
    );
    assert!(
        stats.elections > n / 2,
        "hardly any election: the faults do not bite"
    );
    assert!(
        stats.truncations > n / 10,
        "hardly any truncation: divergence is not exercised"
    );
}

/// Without faults every batch is acknowledged, nothing is elected, the replicas end identical.
#[test]
fn a_run_without_faults_acknowledges_everything() {
    for seed in 0..20 {
        let mut sim = Sim::new(seed, Options::default());
        sim.queue.retain(|s| !matches!(s.ev, Ev::Fault(_)));
        sim.schedule.clear();
        let o = sim.run();
        assert!(o.failure.is_none(), "seed {seed}: {:?}", o.failure);
        assert!(
            o.stats.acked > 20,
            "seed {seed}: {} acknowledged",
            o.stats.acked
        );
        assert_eq!(o.stats.given_up, 0, "seed {seed}");
        assert_eq!(o.stats.elections, 0, "seed {seed}");
        assert_eq!(o.stats.truncations, 0, "seed {seed}");
    }
}

/// The checker is not blind: with unclean leader election allowed (the real `on_fence` and
/// `on_unfence` then elect outside the ISR) the same faults lose acknowledged batches.
#[test]
fn the_checker_catches_what_unclean_election_loses() {
    let opts = Options {
        unclean: true,
        ..Options::default()
    };
    let mut caught = 0;
    for seed in 0..400 {
        let o = simulate(seed, &opts);
        if let Some((_, f)) = &o.failure {
            assert!(f.contains("invariant (1"), "seed {seed}: {f}");
            caught += 1;
        }
    }
    assert!(
        caught > 0,
        "no seed of 400 lost anything to unclean elections"
    );
}

/// Runs `seed` and, when it fails, prints its report (after checking that it replays
/// identically) and panics.
fn assert_seed_passes(seed: u64, opts: &Options) {
    let o = simulate(seed, opts);
    if let Some((_, what)) = &o.failure {
        let report = report_failure(seed, opts, &o);
        println!("{report}");
        panic!("seed {seed}: {what}");
    }
}

/// Runs `seed`, which must fail (the checker catches an old bug), checks that the failure
/// replays identically and contains `expected`, and returns it.
fn assert_seed_fails(seed: u64, opts: &Options, expected: &str) -> String {
    let o = simulate(seed, opts);
    let Some((_, what)) = o.failure.clone() else {
        panic!("seed {seed} passes with {opts:?}: the checker no longer catches the old bug");
    };
    let report = report_failure(seed, opts, &o);
    assert!(
        what.contains(expected),
        "seed {seed} fails otherwise than expected ({expected:?}):\n{report}"
    );
    println!("seed {seed} with {opts:?} fails as expected: {what}");
    what
}

/// Old bug 1 (`old_restart_hw`, fixed by the high-watermark checkpoint): a restarted
/// replica took its log end as its high watermark. Seed 6484: B2 fetches batches up to
/// offset 36 (not committed: B3 is cut off), is killed and restarts with its high watermark
/// at 37; its log agrees with the leader's, so no truncation lowers it; B2 rejoins the ISR
/// and, when leader B1 dies, is elected (epoch 1, ISR [2, 3]) with a high watermark of 37
/// over records B3 never got. A producer's retry of batch 32-36 is a duplicate there and is
/// acknowledged at once (the high watermark already passed it); B2 is then cut off and
/// fenced, B3 leads, and the acknowledged batch is gone. Invariant 2 (replicas differing
/// below their high watermarks) fails first in most seeds of this bug, hence `unchecked: 2`
/// here; seed 78 shows that one. With the fix B2 restarts with its checkpointed high
/// watermark, below the records B3 lacks.
#[test]
fn old_bug_restart_hw_is_caught() {
    let opts = Options {
        old_restart_hw: true,
        unchecked: vec!["2".into()],
        ..Options::default()
    };
    assert_seed_fails(
        6484,
        &opts,
        "invariant (1) broken: acknowledged Batch { base: 32, last: 36,",
    );
}

/// Old bug 1 as invariant 2 sees it (seed 78): B1, killed as leader with an epoch-0 batch
/// 60-64 that leader B2 never got, restarts with a high watermark of 65 over it while B2's
/// log holds the producer's retry of the same payload at 60-64 in epoch 1.
#[test]
fn old_bug_restart_hw_is_caught_by_invariant_2() {
    let opts = Options {
        old_restart_hw: true,
        // Found (and replayed) under the election rules before KIP-966.
        no_elr: true,
        ..Options::default()
    };
    assert_seed_fails(
        78,
        &opts,
        "invariant (2) broken: B1 and B2 differ below their high watermarks (65 and",
    );
}

/// Old bug 2 (`old_isr_expansion`, fixed by KIP-497's maximal ISR): an ISR expansion let in
/// a replica that lacked records below the leader's high watermark, which moved over the
/// ISR of the image only while the AlterPartition adding the replica was in flight
/// (`Broker::maybe_alter_isr`, retried by `MetaNode::submit` for up to 10 s), and the
/// controller accepted the old request. Seed 11356: leader B2 (ISR [2, 3]) asks at 1.21 s
/// to add B1 (caught up at 33) while cut off from the controller; the request gets through
/// at 3.22 s, when B1 (cut off meanwhile, its fetch lost) has 81 and the high watermark is
/// 112; B1 and B2 are killed, B2's new registration fences it and the real `on_fence`
/// elects B1, the first live ISR member: batches 81-111, acknowledged, are lost.
#[test]
fn old_bug_isr_expansion_is_caught() {
    let opts = Options {
        old_isr_expansion: true,
        // Found (and replayed) under the election rules before KIP-966.
        no_elr: true,
        ..Options::default()
    };
    assert_seed_fails(
        11356,
        &opts,
        "invariant (1) broken: acknowledged Batch { base: 81, last: 83,",
    );
}

/// Old bug 3 (`old_produce_wait`, fixed by the wait's leader epoch): an acks=all produce was
/// acknowledged at an offset its batch no longer held. `wait_replicated` woke only on high
/// watermark advances and then checked that the broker leads and that the high watermark
/// passed the batch; a demotion in between went unseen. Seed 1462: leader B1 (epoch 2)
/// appends payload 376 at 1120-1121 and loses the leadership to B2 (epoch 3) before anyone
/// fetched it; B1 truncates it (DIVERGING_EPOCH), rejoins the ISR and is made leader again
/// by the automatic rebalance (epoch 4); another producer's batch lands at 1120-1121; when
/// the high watermark passes 1122 the old wait answers success at offset 1120, which holds
/// payload 377.
#[test]
fn old_bug_produce_wait_is_caught() {
    let opts = Options {
        old_produce_wait: true,
        ..Options::default()
    };
    // Seed 1462 found it before KIP-966; with the strict min ISR and ELR its schedule no
    // longer reaches the bug, seed 573 does (39 of 20,000 seeds fail with this switch).
    assert_seed_fails(
        573,
        &opts,
        "invariant (1) broken: acknowledged Batch { base: 817, last: 818, epoch: -1, payload: 273 }",
    );
}

/// The seeds of the old bugs pass with the fixes (the model's defaults, as the real code).
#[test]
fn the_old_bug_seeds_pass_now() {
    let before_elr = Options {
        no_elr: true,
        ..Options::default()
    };
    for seed in [6484, 78, 11356, 1462, 573] {
        assert_seed_passes(seed, &Options::default());
        assert_seed_passes(seed, &before_elr);
    }
}

/// Old bug 4 (`old_long_poll`, found once the model had the fixes above): a
/// follower's fetch parked at its leader (the long poll, woken by appends) is answered
/// after that leader was demoted, truncated and appended the new leader's batches as a
/// follower: `handlers/fetch.rs` checks the leadership (`current_leader_epoch`) when the
/// request arrives only, not when the wait ends. A follower whose image still names the
/// old leader takes the answer, appends batches of a newer epoch after its own older
/// ones, and its `last_fetched_epoch` (the newest) then hides the divergence from the new
/// leader's DIVERGING_EPOCH check. Kafka's `DelayedFetch` checks the leader epoch again
/// when it completes (FENCED_LEADER_EPOCH / NOT_LEADER_OR_FOLLOWER). Seed 13183: B2, cut
/// off from the controller, long-polls leader B1 (epoch 0) at offset 174; B1 loses the
/// leadership to B3 (epoch 1), truncates 165-173 (epoch 0) and fetches B3's 165-177 (epoch
/// 1, the producers' retries of the same payloads); the parked fetch answers 174-177 to B2,
/// which keeps its epoch-0 165-173; once B2 follows B3, its high watermark passes them
/// (invariant 2). Seeds 80119 and 96808 fail the same way; with the fix (the read checked
/// against the request's leader epoch once done) 100,000 seeds pass.
#[test]
fn old_bug_long_poll_is_caught() {
    let opts = Options {
        old_long_poll: true,
        // Found (and replayed) under the election rules before KIP-966.
        no_elr: true,
        ..Options::default()
    };
    assert_seed_fails(13183, &opts, "invariant (2");
    assert_seed_passes(13183, &Options::default());
}
