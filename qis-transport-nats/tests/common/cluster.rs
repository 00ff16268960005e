//! A three-node nats-server cluster of a test's own: loopback, free ports,
//! each node's store in a temp dir, every node started, killed, paused and
//! resumed by its own PID. The shared cluster of
//! `scripts/servers/nats-cluster.sh` is left alone.

use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use qis_conformance::libtest_mimic::Trial;
use qis_conformance::support::{
    self, await_port, block_on, context, free_port, log_tail, spawn_server, trial, CaseResult,
    TempDir,
};
use qis_core::OutcomeTransport;
use qis_transport_nats::{NatsConfig, NatsTransport};

use super::server_binary;

/// How long a trial on its own cluster may take; its own waits add up to
/// well under this.
pub const LIMIT: Duration = Duration::from_secs(240);

/// A trial named `name` that runs `case` on a private three-node cluster
/// started for it (ignored with the reason when there is no nats-server).
pub fn on_own_cluster<F, Fut>(name: &str, case: F) -> Trial
where
    F: FnOnce(OwnCluster) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = CaseResult>,
{
    trial(name, &server_binary(), move |_| {
        block_on(LIMIT, case(OwnCluster::start(false)?))
    })
}

/// The stream the trials use (the default prefix's).
pub const STREAM: &str = "QIS_OUTCOMES";

/// The cluster's name in every node's configuration.
pub const CLUSTER_NAME: &str = "qis-test-cluster";

struct Node {
    name: String,
    port: u16,
    config: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    paused: bool,
}

/// Three nats-server processes with routes between them, JetStream on each.
/// Dropping it kills every node it still runs (by PID).
pub struct OwnCluster {
    bin: PathBuf,
    dir: TempDir,
    nodes: Vec<Node>,
}

impl OwnCluster {
    /// Start three nodes and wait (bounded) until each accepts connections.
    /// `sync_always` sets JetStream's `sync_interval: always`.
    pub fn start(sync_always: bool) -> Result<Self, String> {
        let bin = server_binary()?;
        let dir = TempDir::new("nats-cluster-test");
        let ports: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();
        let routes: String = ports
            .iter()
            .map(|(_, route)| format!("    nats-route://127.0.0.1:{route}\n"))
            .collect();
        let mut nodes = Vec::new();
        for (i, (port, route)) in ports.iter().enumerate() {
            let name = format!("qis-n{}", i + 1);
            let store = dir.path().join(&name);
            let config = dir.path().join(format!("{name}.conf"));
            let sync = if sync_always {
                "  sync_interval: always\n"
            } else {
                ""
            };
            std::fs::write(
                &config,
                format!(
                    "server_name: {name}\nlisten: 127.0.0.1:{port}\njetstream {{\n  store_dir: \"{}\"\n{sync}}}\ncluster {{\n  name: {CLUSTER_NAME}\n  listen: 127.0.0.1:{route}\n  routes: [\n{routes}  ]\n}}\n",
                    store.display()
                ),
            )
            .map_err(|e| format!("writing {}: {e}", config.display()))?;
            nodes.push(Node {
                log: dir.path().join(format!("{name}.log")),
                name,
                port: *port,
                config,
                child: None,
                paused: false,
            });
        }
        let mut cluster = OwnCluster { bin, dir, nodes };
        for i in 0..3 {
            cluster.spawn(i)?;
        }
        for i in 0..3 {
            cluster.wait_port(i)?;
        }
        Ok(cluster)
    }

    /// Wait (bounded) until every node answers JetStream requests, which in
    /// a cluster needs a meta leader.
    pub async fn ready(&self) -> CaseResult {
        let deadline = Instant::now() + Duration::from_secs(30);
        for i in 0..self.nodes.len() {
            let mut last = String::from("no attempt");
            loop {
                if Instant::now() >= deadline {
                    return Err(format!(
                        "{} did not answer JetStream requests within 30 s ({last}); log:\n{}",
                        self.nodes[i].name,
                        self.log(i)
                    ));
                }
                let attempt = async {
                    let client = async_nats::connect(self.node_url(i))
                        .await
                        .map_err(|e| e.to_string())?;
                    let js = async_nats::jetstream::new(client);
                    js.query_account().await.map_err(|e| e.to_string())
                };
                match tokio::time::timeout(Duration::from_secs(2), attempt).await {
                    Ok(Ok(_)) => break,
                    Ok(Err(e)) => last = e,
                    Err(_) => last = "no answer within 2 s".into(),
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Ok(())
    }

    /// The seed URL of all three nodes: `nats://127.0.0.1:p1,127.0.0.1:p2,127.0.0.1:p3`.
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        format!("nats://{}", hosts.join(","))
    }

    /// The URL of node `i` alone.
    pub fn node_url(&self, i: usize) -> String {
        format!("nats://127.0.0.1:{}", self.nodes[i].port)
    }

    /// The index of the node with this server name (`qis-n2` → 1).
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.name == name)
    }

    /// The server name of node `i`.
    pub fn name(&self, i: usize) -> &str {
        &self.nodes[i].name
    }

    /// The PID of node `i`, if it runs.
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.nodes[i].child.as_ref().map(Child::id)
    }

    fn spawn(&mut self, i: usize) -> CaseResult {
        let node = &mut self.nodes[i];
        if node.child.is_some() {
            return Err(format!("node {} is already running", node.name));
        }
        let child = spawn_server(
            Command::new(&self.bin).arg("-c").arg(&node.config),
            &node.log,
        )?;
        node.child = Some(child);
        Ok(())
    }

    fn wait_port(&mut self, i: usize) -> CaseResult {
        let node = &mut self.nodes[i];
        await_port(&mut node.child, node.port, Duration::from_secs(15))
            .map_err(|why| format!("{} {why}; log:\n{}", self.nodes[i].name, self.log(i)))
    }

    /// SIGKILL node `i` (by its PID) and wait for it to exit.
    pub fn kill(&mut self, i: usize) -> CaseResult {
        let node = &mut self.nodes[i];
        let mut child = node
            .child
            .take()
            .ok_or_else(|| format!("{} is not running", node.name))?;
        child
            .kill()
            .map_err(|e| format!("kill {}: {e}", node.name))?;
        child.wait().map_err(|e| e.to_string())?;
        node.paused = false;
        Ok(())
    }

    /// Start node `i` again on its configuration and store; returns once its
    /// port answers.
    pub fn restart(&mut self, i: usize) -> CaseResult {
        self.spawn(i)?;
        self.wait_port(i)
    }

    /// SIGSTOP node `i`: it keeps its connections open and answers nothing.
    pub fn pause(&mut self, i: usize) -> CaseResult {
        self.signal(i, "-STOP")?;
        self.nodes[i].paused = true;
        Ok(())
    }

    /// SIGCONT node `i`.
    pub fn resume(&mut self, i: usize) -> CaseResult {
        self.signal(i, "-CONT")?;
        self.nodes[i].paused = false;
        Ok(())
    }

    fn signal(&self, i: usize, signal: &str) -> CaseResult {
        let pid = self
            .pid(i)
            .ok_or_else(|| format!("{} is not running", self.nodes[i].name))?;
        support::signal(pid, signal)
    }

    /// The last lines of node `i`'s log.
    pub fn log(&self, i: usize) -> String {
        log_tail(&self.nodes[i].log, 20)
    }

    /// Where the stores, configurations and logs are.
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }
}

impl Drop for OwnCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                if node.paused {
                    let _ = Command::new("kill")
                        .args(["-CONT", &child.id().to_string()])
                        .status();
                }
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

pub async fn connect(url: &str) -> Result<qis_core::Checked<NatsTransport>, String> {
    let config = NatsConfig::from_url(url)
        .map_err(context("config"))?
        .replicas(3);
    NatsTransport::connect(config)
        .await
        .map_err(context("connect"))
}

/// One connection to each node alone, to ask the cluster about itself
/// through a node that is neither killed nor paused.
pub struct Observers(Vec<qis_core::Checked<NatsTransport>>);

impl Observers {
    pub async fn connect(cluster: &OwnCluster) -> Result<Self, String> {
        let mut all = Vec::new();
        for i in 0..3 {
            all.push(connect(&cluster.node_url(i)).await?);
        }
        Ok(Observers(all))
    }

    /// The connections to the nodes other than `node`.
    pub fn avoiding(&self, node: usize) -> impl Iterator<Item = &NatsTransport> {
        self.0
            .iter()
            .enumerate()
            .filter(move |(i, _)| *i != node)
            .map(|(_, o)| &**o)
    }

    pub fn any(&self) -> &NatsTransport {
        &self.0[0]
    }

    pub async fn close(self) -> CaseResult {
        for o in self.0 {
            o.close().await.map_err(context("close observer"))?;
        }
        Ok(())
    }
}

/// The stream leader's server name, as the cluster reports it (`None` while
/// there is none or nobody answers).
pub async fn stream_leader(observer: &NatsTransport) -> Option<String> {
    let js = observer.jetstream();
    let stream = tokio::time::timeout(Duration::from_secs(2), js.get_stream(STREAM))
        .await
        .ok()?
        .ok()?;
    stream.cached_info().cluster.as_ref()?.leader.clone()
}

/// Whether all three replicas of the stream are current.
pub async fn replicas_current(observer: &NatsTransport) -> bool {
    let js = observer.jetstream();
    let Ok(Ok(stream)) = tokio::time::timeout(Duration::from_secs(2), js.get_stream(STREAM)).await
    else {
        return false;
    };
    let Some(cluster) = stream.cached_info().cluster.as_ref() else {
        return false;
    };
    cluster.leader.is_some()
        && cluster.replicas.len() == 2
        && cluster.replicas.iter().all(|r| r.current && !r.offline)
}

/// The consumer's leader and whether a pull request waits on it.
pub async fn consumer_state(t: &NatsTransport, name: &str) -> Option<(String, usize)> {
    let info = consumer_info(t, name).await?;
    Some((info.cluster.as_ref()?.leader.clone()?, info.num_waiting))
}

/// What the server says about consumer `name` of the stream, if it
/// answers within 2 s.
async fn consumer_info(
    t: &NatsTransport,
    name: &str,
) -> Option<async_nats::jetstream::consumer::Info> {
    let js = t.jetstream();
    tokio::time::timeout(Duration::from_secs(2), async {
        js.get_stream(STREAM)
            .await
            .ok()?
            .consumer_info(name)
            .await
            .ok()
    })
    .await
    .ok()?
}

/// Whether the consumer has a leader and two current followers.
pub async fn consumer_whole(t: &NatsTransport, name: &str) -> bool {
    let Some(info) = consumer_info(t, name).await else {
        return false;
    };
    info.cluster.as_ref().is_some_and(|c| {
        c.leader.is_some()
            && c.replicas.len() == 2
            && c.replicas.iter().all(|r| r.current && !r.offline)
    })
}
