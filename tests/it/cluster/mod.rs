//! A cluster of real `ottla` processes on loopback for integration tests (`mod common; mod
//! cluster;`): every node in combined mode (broker + controller) unless [`Options::roles`]
//! says otherwise, its own free client and controller ports and its own temporary data
//! directory, all started with the same `--controller-quorum-voters` list (the nodes with the
//! controller role). Nodes are named by their node id, 1..=n.
//!
//! - [`Cluster::start`] spawns them, waits for every ready line, then polls DescribeCluster on
//!   every node until all n brokers are listed unfenced and every node names the same active
//!   controller. A start whose ports were taken in the meantime is retried with new ones.
//! - [`Cluster::kill`] sends SIGKILL or SIGTERM and waits for the process to exit;
//!   [`Cluster::restart`] starts the node again on the same ports and data directory.
//! - Each node's stderr is kept (across restarts); a panicking test prints every node's log
//!   when the cluster is dropped (every test does with `OTTLA_CLUSTER_LOGS=1`), and dropping
//!   kills whatever still runs. The nodes inherit the test's environment (`RUST_LOG`).
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kafka_protocol::messages::{
    DescribeClusterRequest, DescribeQuorumRequest, MetadataRequest, MetadataResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use crate::common::Client;

// Not every test crate that includes this module uses every signal.
#[allow(unused_imports)]
pub use libc::{SIGCONT, SIGKILL, SIGSTOP, SIGTERM};

/// How long a node may take to print its ready line.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the nodes may take to agree (registered, unfenced, one controller).
const AGREE_TIMEOUT: Duration = Duration::from_secs(30);
/// Attempts at a start whose ports were taken between choosing and binding them.
const START_ATTEMPTS: usize = 5;

/// Extra settings for every node.
#[derive(Clone, Default)]
pub struct Options {
    /// Flags appended to every node's command line.
    pub args: Vec<String>,
    /// Environment variables (e.g. `OTTLA_BROKER_SESSION_TIMEOUT_MS`).
    pub env: Vec<(String, String)>,
    /// `--process-roles` of some nodes (`"broker"`, `"controller"`); the others run in
    /// combined mode. The voters are the nodes with the controller role.
    pub roles: Vec<(i32, &'static str)>,
    /// Flags appended to one node's command line (e.g. its `--broker-rack`).
    pub node_args: Vec<(i32, Vec<String>)>,
}

impl Options {
    /// Node `id`'s roles (default `broker,controller`).
    pub fn role(&self, id: i32) -> &'static str {
        self.roles
            .iter()
            .find(|(n, _)| *n == id)
            .map_or("broker,controller", |(_, r)| r)
    }

    pub fn is_broker(&self, id: i32) -> bool {
        self.role(id).contains("broker")
    }

    pub fn is_controller(&self, id: i32) -> bool {
        self.role(id).contains("controller")
    }
}

pub struct Node {
    pub id: i32,
    pub client_port: u16,
    pub controller_port: u16,
    pub data_dir: PathBuf,
    child: Option<Child>,
    /// Every stderr line of every run of this node (a `--- … ---` line between runs).
    log: Arc<Mutex<Vec<String>>>,
    /// Ready lines seen so far (one per successful start).
    readies: Arc<Mutex<Vec<Instant>>>,
    /// When the current run was spawned.
    spawned: Instant,
    runs: usize,
}

impl Node {
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.client_port))
    }

    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    fn log_text(&self) -> String {
        lock(&self.log).join("\n")
    }
}

pub struct Cluster {
    pub nodes: Vec<Node>,
    /// The `--controller-quorum-voters` value every node got.
    pub voters: String,
    /// From the first spawn to every node ready and agreeing (the last [`Cluster::start`]).
    pub startup: Duration,
    options: Options,
    _root: Arc<tempfile::TempDir>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A port nothing listens on right now (bound on 127.0.0.1:0, then released).
fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}

/// `s` without ANSI colour sequences.
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\x1b' && chars.peek() == Some(&'[') {
            chars.next();
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// What the cluster looks like from one node (DescribeCluster).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct View {
    pub controller_id: i32,
    /// Unfenced brokers, sorted.
    pub brokers: Vec<i32>,
    pub cluster_id: String,
}

impl Cluster {
    /// `n` nodes, ready and agreeing.
    pub async fn start(n: usize) -> Cluster {
        Cluster::start_with(n, Options::default()).await
    }

    pub async fn start_with(n: usize, options: Options) -> Cluster {
        let root = Arc::new(tempfile::tempdir().expect("temp dir"));
        let mut last_error = String::new();
        for attempt in 1..=START_ATTEMPTS {
            let mut nodes: Vec<Node> = (1..=n as i32)
                .map(|id| {
                    let data_dir = root.path().join(format!("attempt{attempt}-node{id}"));
                    Node {
                        id,
                        client_port: free_port(),
                        controller_port: free_port(),
                        data_dir,
                        child: None,
                        log: Arc::default(),
                        readies: Arc::default(),
                        spawned: Instant::now(),
                        runs: 0,
                    }
                })
                .collect();
            let voters = nodes
                .iter()
                .filter(|nd| options.is_controller(nd.id))
                .map(|nd| format!("{}@127.0.0.1:{}", nd.id, nd.controller_port))
                .collect::<Vec<_>>()
                .join(",");
            let t0 = Instant::now();
            for node in &mut nodes {
                spawn(node, &voters, &options);
            }
            let mut cluster = Cluster {
                nodes,
                voters,
                startup: Duration::ZERO,
                options: options.clone(),
                _root: root.clone(),
            };
            match cluster.wait_all_ready().await {
                Ok(()) => {}
                Err(e) if e.contains("cannot listen on") && attempt < START_ATTEMPTS => {
                    // A port was taken between choosing and binding it: all again, new ports.
                    last_error = e;
                    continue;
                }
                Err(e) => {
                    cluster.print_logs();
                    panic!("the cluster did not start: {e}");
                }
            }
            let brokers = cluster.brokers();
            cluster.wait_agree(&brokers, &brokers).await;
            cluster.startup = t0.elapsed();
            return cluster;
        }
        panic!("no free ports after {START_ATTEMPTS} attempts: {last_error}");
    }

    pub fn node(&self, id: i32) -> &Node {
        &self.nodes[(id - 1) as usize]
    }

    fn node_mut(&mut self, id: i32) -> &mut Node {
        &mut self.nodes[(id - 1) as usize]
    }

    /// Node ids, 1..=n.
    pub fn ids(&self) -> Vec<i32> {
        self.nodes.iter().map(|n| n.id).collect()
    }

    /// Ids of the nodes with the broker role (which serve clients), sorted.
    pub fn brokers(&self) -> Vec<i32> {
        self.ids()
            .into_iter()
            .filter(|&id| self.options.is_broker(id))
            .collect()
    }

    /// Ids of the nodes whose process runs.
    pub fn running(&mut self) -> Vec<i32> {
        self.nodes
            .iter_mut()
            .filter_map(|n| n.is_running().then_some(n.id))
            .collect()
    }

    /// Node `id`'s client address.
    pub fn bootstrap(&self, id: i32) -> SocketAddr {
        self.node(id).addr()
    }

    /// Every node's client address, comma-separated (a client's bootstrap list).
    pub fn bootstrap_all(&self) -> String {
        self.nodes
            .iter()
            .map(|n| n.addr().to_string())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// A connection to node `id` (panics with the logs when it cannot connect).
    pub async fn client(&self, id: i32) -> Client {
        match Client::try_connect(self.bootstrap(id)).await {
            Some(c) => c,
            None => {
                self.print_logs();
                panic!("cannot connect to node {id} at {}", self.bootstrap(id));
            }
        }
    }

    /// How long node `id`'s last run took from spawn to its ready line.
    pub fn ready_time(&self, id: i32) -> Option<Duration> {
        let n = self.node(id);
        lock(&n.readies)
            .last()
            .map(|t| t.saturating_duration_since(n.spawned))
    }

    /// Sends `signal` (SIGKILL or SIGTERM) to node `id` and waits until it exited.
    pub fn kill(&mut self, id: i32, signal: i32) -> Option<ExitStatus> {
        let node = self.node_mut(id);
        let mut child = node.child.take()?;
        let pid = child.id() as libc::pid_t;
        // SAFETY: kill(2) on a child this harness spawned and has not reaped yet.
        unsafe {
            libc::kill(pid, signal);
        }
        let status = child.wait().expect("wait for the node");
        lock(&node.log).push(format!(
            "--- harness: node {id} exited after signal {signal}: {status} ---"
        ));
        Some(status)
    }

    /// Sends `signal` to node `id` without waiting (SIGSTOP / SIGCONT pause and resume it).
    pub fn signal(&mut self, id: i32, signal: i32) {
        let node = self.node_mut(id);
        if let Some(c) = &node.child {
            // SAFETY: as in `kill`.
            unsafe {
                libc::kill(c.id() as libc::pid_t, signal);
            }
            lock(&node.log).push(format!(
                "--- harness: signal {signal} sent to node {id} ---"
            ));
        }
    }

    /// Sends `signal` to every running node at once, then waits for all of them.
    pub fn kill_all(&mut self, signal: i32) -> Vec<(i32, ExitStatus)> {
        for n in &mut self.nodes {
            if let Some(c) = &n.child {
                // SAFETY: as in `kill`.
                unsafe {
                    libc::kill(c.id() as libc::pid_t, signal);
                }
            }
        }
        let mut out = Vec::new();
        for n in &mut self.nodes {
            if let Some(mut c) = n.child.take() {
                let status = c.wait().expect("wait for the node");
                lock(&n.log).push(format!(
                    "--- harness: node {} exited after signal {signal}: {status} ---",
                    n.id
                ));
                out.push((n.id, status));
            }
        }
        out
    }

    /// Starts node `id` again (same ports, same data directory) and waits for its ready line.
    pub async fn restart(&mut self, id: i32) {
        let voters = self.voters.clone();
        let options = self.options.clone();
        let node = self.node_mut(id);
        assert!(node.child.is_none(), "node {id} still runs");
        spawn(node, &voters, &options);
        if let Err(e) = self.wait_ready(id).await {
            self.print_logs();
            panic!("node {id} did not restart: {e}");
        }
    }

    /// Starts every stopped node again, all at once, and waits for their ready lines.
    pub async fn restart_all(&mut self) {
        let voters = self.voters.clone();
        let options = self.options.clone();
        let mut started = Vec::new();
        for node in &mut self.nodes {
            if node.child.is_none() {
                spawn(node, &voters, &options);
                started.push(node.id);
            }
        }
        for id in started {
            if let Err(e) = self.wait_ready(id).await {
                self.print_logs();
                panic!("node {id} did not restart: {e}");
            }
        }
    }

    async fn wait_all_ready(&mut self) -> Result<(), String> {
        for id in self.ids() {
            self.wait_ready(id).await?;
        }
        Ok(())
    }

    /// Waits for the ready line of node `id`'s current run.
    async fn wait_ready(&mut self, id: i32) -> Result<(), String> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let node = self.node_mut(id);
            if lock(&node.readies).len() >= node.runs {
                return Ok(());
            }
            if !node.is_running() {
                // Let the reader thread take the last lines.
                tokio::time::sleep(Duration::from_millis(50)).await;
                let node = self.node(id);
                return Err(format!(
                    "node {id} exited before its ready line: {}",
                    lock(&node.log)
                        .iter()
                        .rev()
                        .take(5)
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(" | ")
                ));
            }
            if Instant::now() > deadline {
                return Err(format!("node {id}: no ready line within {READY_TIMEOUT:?}"));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// DescribeCluster from node `id`, or None when it does not answer.
    pub async fn view(&self, id: i32) -> Option<View> {
        let mut c = Client::try_connect(self.bootstrap(id)).await?;
        let req = DescribeClusterRequest::default().with_endpoint_type(1);
        let r = tokio::time::timeout(Duration::from_secs(5), c.try_send(&req, 1))
            .await
            .ok()??;
        if r.error_code != 0 {
            return None;
        }
        let mut brokers: Vec<i32> = r
            .brokers
            .iter()
            .filter(|b| !b.is_fenced)
            .map(|b| b.broker_id.0)
            .collect();
        brokers.sort_unstable();
        // The active controller: DescribeQuorum's leader (Metadata and DescribeCluster name the
        // answering broker, as KRaft Kafka names an alive one).
        use kafka_protocol::messages::describe_quorum_request::{PartitionData, TopicData};
        let quorum = DescribeQuorumRequest::default().with_topics(vec![TopicData::default()
            .with_topic_name(TopicName(StrBytes::from_static_str("__cluster_metadata")))
            .with_partitions(vec![PartitionData::default().with_partition_index(0)])]);
        let q = tokio::time::timeout(Duration::from_secs(5), c.try_send(&quorum, 1))
            .await
            .ok()??;
        let leader = q.topics.first()?.partitions.first()?;
        if q.error_code != 0 || leader.error_code != 0 {
            return None;
        }
        Some(View {
            controller_id: leader.leader_id.0,
            brokers,
            cluster_id: r.cluster_id.to_string(),
        })
    }

    /// Polls DescribeCluster on every node of `on` (brokers) until each lists at least the
    /// brokers of `unfenced` (exactly them when `on == unfenced`, as after a full start) and
    /// all name the same controller, one of `on` or a controller-only node. Returns that
    /// controller's id.
    pub async fn wait_agree(&self, on: &[i32], unfenced: &[i32]) -> i32 {
        let deadline = Instant::now() + AGREE_TIMEOUT;
        let exact = on == unfenced;
        loop {
            let mut views = Vec::new();
            for &id in on {
                views.push((id, self.view(id).await));
            }
            let controller = views
                .first()
                .and_then(|(_, v)| v.as_ref())
                .map(|v| v.controller_id);
            let agreed = views.iter().all(|(_, v)| {
                v.as_ref().is_some_and(|v| {
                    Some(v.controller_id) == controller
                        && (on.contains(&v.controller_id)
                            || self.options.role(v.controller_id) == "controller")
                        && if exact {
                            v.brokers == unfenced
                        } else {
                            unfenced.iter().all(|b| v.brokers.contains(b))
                        }
                })
            });
            if agreed {
                if let Some(c) = controller {
                    return c;
                }
            }
            if Instant::now() > deadline {
                self.print_logs();
                panic!("nodes {on:?} did not agree within {AGREE_TIMEOUT:?} (want unfenced {unfenced:?}): {views:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The active controller as every node of `on` reports it (they must agree).
    pub async fn controller(&self, on: &[i32]) -> i32 {
        self.wait_agree(on, &[]).await
    }

    /// Metadata (v12, every topic) from node `id`.
    pub async fn metadata(&self, id: i32) -> MetadataResponse {
        let mut c = self.client(id).await;
        let req = MetadataRequest::default()
            .with_topics(None)
            .with_allow_auto_topic_creation(false);
        match c.try_send(&req, 12).await {
            Some(r) => r,
            None => {
                self.print_logs();
                panic!("node {id} closed the connection instead of answering Metadata");
            }
        }
    }

    /// Node `id`'s log so far (every run).
    pub fn logs(&self, id: i32) -> String {
        self.node(id).log_text()
    }

    /// Lines of node `id`'s log that contain `needle`.
    pub fn log_lines(&self, id: i32, needle: &str) -> Vec<String> {
        lock(&self.node(id).log)
            .iter()
            .filter(|l| l.contains(needle))
            .cloned()
            .collect()
    }

    /// Every node's log, on stderr (shown for a failing test).
    pub fn print_logs(&self) {
        for n in &self.nodes {
            eprintln!(
                "----- node {} (client {}, controller {}, data {}) -----\n{}",
                n.id,
                n.client_port,
                n.controller_port,
                n.data_dir.display(),
                n.log_text()
            );
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            if let Some(mut c) = n.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        if std::thread::panicking() || std::env::var_os("OTTLA_CLUSTER_LOGS").is_some() {
            self.print_logs();
        }
    }
}

/// Spawns one run of `node` and a thread that keeps its stderr lines.
fn spawn(node: &mut Node, voters: &str, options: &Options) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ottla"));
    cmd.arg("--node-id")
        .arg(node.id.to_string())
        .arg("--data-dir")
        .arg(&node.data_dir)
        .arg("--listen")
        .arg(format!("127.0.0.1:{}", node.client_port))
        .arg("--controller-listen")
        .arg(format!("127.0.0.1:{}", node.controller_port))
        .arg("--controller-quorum-voters")
        .arg(voters)
        .arg("--process-roles")
        .arg(options.role(node.id))
        .args(&options.args)
        .args(
            options
                .node_args
                .iter()
                .filter(|(n, _)| *n == node.id)
                .flat_map(|(_, a)| a),
        )
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in &options.env {
        cmd.env(k, v);
    }
    node.runs += 1;
    lock(&node.log).push(format!(
        "--- harness: run {} of node {} ---",
        node.runs, node.id
    ));
    node.spawned = Instant::now();
    let mut child = cmd.spawn().expect("spawn ottla");
    let stderr = child.stderr.take().expect("piped stderr");
    let log = node.log.clone();
    let readies = node.readies.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            let line = strip_ansi(&line);
            if line.contains("ottla ready on") {
                lock(&readies).push(Instant::now());
            }
            lock(&log).push(line);
        }
    });
    node.child = Some(child);
}
