//! The command line grammar (clap derive).

use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgGroup, Args, Parser, Subcommand, ValueEnum};
use qis::{Subject, SubjectPattern};

use crate::error::CliError;

mod values;

pub use values::ContextVector;
use values::{
    parse_duration, parse_half_life, parse_k, parse_pattern, parse_secs, parse_share,
    parse_subject, positive,
};

/// `qis`: deposit, watch, fetch and synthesise outcome packets on any QIS
/// transport, and measure the transports against each other.
#[derive(Debug, Parser)]
#[command(
    name = "qis",
    version,
    about = "Deposit, watch, fetch and synthesise QIS outcome packets on any transport",
    long_about = "Deposit, watch, fetch and synthesise QIS outcome packets on any transport.\n\n\
        The transport is picked from --url (or QIS_URL): sqlite://PATH (the default, one file, no server), \
        nats://HOST:PORT, redis://HOST:PORT, kafka://HOST:PORT, chroma://HOST:PORT, or memory:// (in this process only).\n\n\
        Exit codes: 0 ok, 1 runtime failure (server unreachable, timeout, ...), 2 usage or invalid input.\n\
        Logging goes to stderr; set RUST_LOG (default: warn).",
    after_help = "Examples:\n  \
        qis deposit --agent-id hvac-a --domain hvac --problem-class energy-anomaly \\\n      \
        --conclusion 'Compressor draw 18% above baseline.' --confidence 0.87 \\\n      \
        --context 0.18,0.92,0.03,0.71 --source-node building-a\n  \
        qis watch 'qis.iot.>'\n  \
        qis twins hvac energy-anomaly --consumer building-b\n  \
        qis twins hvac energy-anomaly --similar-to 0.18,0.92,0.03,0.71 --k 10 --min-score 0.9\n  \
        qis --url nats://127.0.0.1:4222 synth hvac energy-anomaly --consumer building-b --own-json own.json\n  \
        qis compare --transports sqlite,nats --packets 2000\n  \
        qis --url sqlite://qis.db serve --listen 127.0.0.1:8080 --tokens-file tokens.txt"
)]
pub struct Cli {
    /// Transport URL: sqlite://PATH, nats://HOST:PORT, redis://HOST:PORT,
    /// kafka://HOST:PORT or memory://.
    #[arg(
        long,
        global = true,
        env = "QIS_URL",
        default_value = "sqlite://qis.db",
        value_name = "URL"
    )]
    pub url: String,

    /// Subject prefix [default: qis.iot, or the URL's ?prefix=].
    #[arg(long, global = true, env = "QIS_PREFIX", value_name = "PREFIX", value_parser = parse_subject)]
    pub prefix: Option<Subject>,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build, validate and deposit an outcome packet; print its receipt.
    Deposit(DepositArgs),
    /// Print live packets matching a pattern as they arrive (at-most-once), until Ctrl-C.
    Watch(WatchArgs),
    /// Fetch twins' packets with a durable consumer, ack them and print them.
    Twins(TwinsArgs),
    /// Fetch twins' packets (acked) and print the local synthesis with your own packet.
    Synth(SynthArgs),
    /// Print the readable subject, the fingerprint and the fingerprinted subject.
    Fingerprint(FingerprintArgs),
    /// Run the same swarm scenario on several transports and print a comparison table.
    Compare(CompareArgs),
    /// Forward packets from one transport to another until SIGINT/SIGTERM (store and forward).
    Bridge(BridgeArgs),
    /// Print the durable consumers with their backlog (and, for SQLite, the store's fill).
    Status(StatusArgs),
    /// Serve the transport over HTTP/JSON (for devices that only speak HTTP) with a dashboard at /.
    Serve(ServeArgs),
    /// Merge scripts/series.sh's server figures with `qis compare --json` results into one table and chart.
    SeriesMerge(SeriesMergeArgs),
}

/// `qis serve`: the HTTP gateway and dashboard in front of `--url`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on (port 0: any free port).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    pub listen: std::net::SocketAddr,
    /// Require this bearer token on /v1/... (repeatable; prefer --tokens-file:
    /// a command line is visible to other users).
    #[arg(long = "token", value_name = "TOKEN")]
    pub tokens: Vec<String>,
    /// Require one of the bearer tokens in this file (one per line, # comments).
    #[arg(long, value_name = "FILE")]
    pub tokens_file: Option<PathBuf>,
    /// Serve HTTPS with this PEM certificate chain (with --tls-key).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Largest request body, in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = qis_gateway::DEFAULT_MAX_BODY, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_body: u64,
    /// Most packets in one batch deposit.
    #[arg(long, value_name = "N", default_value_t = qis_gateway::DEFAULT_MAX_BATCH, value_parser = positive)]
    pub max_batch: usize,
    /// Most long-polls and live event streams served at once (one more gets 429).
    #[arg(long, value_name = "N", default_value_t = qis_gateway::DEFAULT_MAX_STREAMS, value_parser = positive)]
    pub max_streams: usize,
    /// Longest fetch long-poll.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub max_wait: Duration,
    /// Close a consumer session unused for this long (its client reopens it by name).
    #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = parse_duration)]
    pub session_idle: Duration,
}

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// One readable line per item.
    Text,
    /// One JSON object per line.
    Json,
}

/// The fields of one's own packet, other than domain and problem class.
#[derive(Debug, Clone, Args)]
pub struct OwnFlags {
    /// The agent that concluded (1–128 bytes).
    #[arg(long, value_name = "ID")]
    pub agent_id: Option<String>,

    /// What the agent concluded, for people.
    #[arg(long, value_name = "TEXT")]
    pub conclusion: Option<String>,

    /// How sure the agent is, 0.0 to 1.0.
    #[arg(long, value_name = "C")]
    pub confidence: Option<f64>,

    /// The compressed context vector, comma separated: 0.18,0.92,0.03,0.71.
    #[arg(long, value_name = "X,Y,...", allow_hyphen_values = true)]
    pub context: Option<ContextVector>,

    /// The node the agent runs on (1–128 bytes).
    #[arg(long, value_name = "NODE")]
    pub source_node: Option<String>,

    /// Seconds since the Unix epoch [default: now].
    #[arg(long, value_name = "SECS")]
    pub timestamp: Option<f64>,
}

/// `qis deposit`.
#[derive(Debug, Args)]
pub struct DepositArgs {
    /// Domain token, e.g. hvac.
    #[arg(long, value_name = "TOKEN")]
    pub domain: Option<String>,

    /// Problem-class token, e.g. energy-anomaly.
    #[arg(long, value_name = "TOKEN")]
    pub problem_class: Option<String>,

    /// The packet's fields (required unless --json).
    #[command(flatten)]
    pub own: OwnFlags,

    /// Read packets as JSON from FILE ('-' for stdin) instead of the flags: one
    /// object with the eight wire keys, or several one after another.
    #[arg(
        long,
        value_name = "FILE",
        conflicts_with_all = ["domain", "problem_class", "agent_id", "conclusion", "confidence", "context", "source_node", "timestamp"]
    )]
    pub json: Option<PathBuf>,

    /// Deposit on the fingerprinted subject {prefix}.{domain}.{problem_class}.{fingerprint},
    /// at bucket resolution RES (default 4).
    #[arg(long, value_name = "RES", num_args = 0..=1, require_equals = true, default_missing_value = "4")]
    pub fingerprint: Option<u32>,

    /// How to print the receipt.
    #[arg(long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

/// `qis watch`.
#[derive(Debug, Args)]
pub struct WatchArgs {
    /// Subject pattern: '*' is one token, '>' one or more trailing tokens
    /// [default: PREFIX.>].
    #[arg(value_name = "PATTERN", value_parser = parse_pattern)]
    pub pattern: Option<SubjectPattern>,

    /// Print one JSON object per packet.
    #[arg(long)]
    pub json: bool,

    /// Stop after N packets.
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,
}

/// The durable-consumer options `twins` and `synth` share.
#[derive(Debug, Args)]
pub struct ConsumerFlags {
    /// Domain token of the twins' subject.
    #[arg(value_name = "DOMAIN")]
    pub domain: String,

    /// Problem-class token of the twins' subject.
    #[arg(value_name = "PROBLEM_CLASS")]
    pub problem_class: String,

    /// Durable consumer name (1–64 of A-Z a-z 0-9 _ -): it resumes after its
    /// last acked packet, here or in another process.
    #[arg(long, value_name = "NAME")]
    pub consumer: Option<String>,

    /// Fetch at most N packets.
    #[arg(long, value_name = "N", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    pub max: u32,

    /// How long to wait for the first packet: 500ms, 2s, 1m.
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = parse_duration)]
    pub wait: Duration,
}

/// `qis twins`.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("how").required(true).args(["consumer", "similar_to"])))]
pub struct TwinsArgs {
    /// Which consumer, which subject.
    #[command(flatten)]
    pub consumer: ConsumerFlags,

    /// Instead of a durable fetch: the K stored packets on DOMAIN/PROBLEM_CLASS
    /// (its readable subject and every fingerprint leaf below it) whose context
    /// vectors are most like this one, by cosine similarity, best first, with
    /// their scores. Needs a transport with similarity search (memory, sqlite, chroma).
    #[arg(
        long,
        value_name = "X,Y,...",
        allow_hyphen_values = true,
        conflicts_with_all = ["consumer", "max", "wait"]
    )]
    pub similar_to: Option<ContextVector>,

    /// How many similar packets at most (1 to 10000) [default: 10].
    #[arg(long, value_name = "K", requires = "similar_to", conflicts_with = "consumer", value_parser = parse_k)]
    pub k: Option<usize>,

    /// Only similar packets scoring at least S (a cosine similarity, -1 to 1).
    #[arg(
        long,
        value_name = "S",
        requires = "similar_to",
        allow_hyphen_values = true
    )]
    pub min_score: Option<f64>,

    /// Print one JSON object per packet.
    #[arg(long)]
    pub json: bool,
}

/// `qis synth`.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("who").required(true).args(["consumer"])))]
pub struct SynthArgs {
    /// Which consumer, which subject.
    #[command(flatten)]
    pub consumer: ConsumerFlags,

    /// Your own packet as JSON from FILE ('-' for stdin), instead of the flags.
    #[arg(
        long,
        value_name = "FILE",
        conflicts_with_all = ["agent_id", "conclusion", "confidence", "context", "source_node", "timestamp"]
    )]
    pub own_json: Option<PathBuf>,

    /// Your own packet's fields (its domain and problem class are DOMAIN and PROBLEM_CLASS).
    #[command(flatten)]
    pub own: OwnFlags,

    /// How the votes are counted.
    #[command(flatten)]
    pub options: SynthOptions,

    /// Print the whole synthesis as one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// A synthesis method, as `qis synth --method` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum MethodName {
    /// The seed's rules: one vote each, ties to the first seen, no recency.
    Seed,
    /// One vote each (times recency with --half-life); ties never depend on order.
    Majority,
    /// Votes weighted by confidence (times recency with --half-life).
    ConfidenceWeighted,
}

impl From<MethodName> for qis::Method {
    fn from(m: MethodName) -> Self {
        match m {
            MethodName::Seed => qis::Method::Seed,
            MethodName::Majority => qis::Method::Majority,
            MethodName::ConfidenceWeighted => qis::Method::ConfidenceWeighted,
        }
    }
}

/// The synthesis options (`qis::SynthesisConfig`).
#[derive(Debug, Clone, Args)]
pub struct SynthOptions {
    /// How votes weigh.
    #[arg(long, value_enum, default_value_t = MethodName::ConfidenceWeighted)]
    pub method: MethodName,

    /// Distinct agents that must back the consensus before an alert (1 = none).
    #[arg(long, value_name = "N", default_value_t = qis::DEFAULT_QUORUM)]
    pub quorum: usize,

    /// Alert when the weighted strength is strictly above this share (0 to 1).
    #[arg(long, value_name = "SHARE", default_value_t = qis::ALERT_THRESHOLD, value_parser = parse_share)]
    pub threshold: f64,

    /// Weigh votes by age: one this old weighs half a fresh one (90s, 15m, 6h, 2d) [default: off].
    #[arg(long, value_name = "DURATION", value_parser = parse_half_life)]
    pub half_life: Option<Duration>,

    /// Measure ages from this time, seconds since the Unix epoch [default: now].
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    pub now: Option<f64>,

    /// Exclude agents whose situation is far from the others' on their problem (the default).
    #[arg(long, overrides_with = "no_outliers")]
    pub outliers: bool,

    /// Keep every agent's vote, however far its situation.
    #[arg(long, overrides_with = "outliers")]
    pub no_outliers: bool,

    /// Fingerprint bucket resolution for agreement and outliers.
    #[arg(long, value_name = "RES", default_value_t = qis::DEFAULT_RESOLUTION, value_parser = clap::value_parser!(u32).range(1..))]
    pub resolution: u32,
}

impl SynthOptions {
    /// The library configuration these options describe; a value it
    /// refuses is a usage error.
    pub fn config(&self) -> Result<qis::SynthesisConfig, CliError> {
        let mut c = qis::SynthesisConfig::default()
            .with_method(self.method.into())
            .with_quorum(self.quorum)
            .with_threshold(self.threshold)?
            .with_half_life(self.half_life)?
            .with_outliers(!self.no_outliers)
            .with_resolution(self.resolution)?;
        if let Some(now) = self.now {
            c = c.with_now(now)?;
        }
        Ok(c)
    }
}

/// `qis fingerprint`.
#[derive(Debug, Args)]
pub struct FingerprintArgs {
    /// Domain token.
    #[arg(long, value_name = "TOKEN")]
    pub domain: String,

    /// Problem-class token.
    #[arg(long, value_name = "TOKEN")]
    pub problem_class: String,

    /// The context vector, comma separated.
    #[arg(long, value_name = "X,Y,...", allow_hyphen_values = true)]
    pub context: ContextVector,

    /// Bucket resolution (a positive integer).
    #[arg(long, value_name = "RES", default_value_t = qis::DEFAULT_RESOLUTION)]
    pub resolution: u32,

    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// A backend `compare` can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BackendName {
    /// In-process store.
    Memory,
    /// One SQLite file (a fresh temporary one).
    Sqlite,
    /// NATS JetStream ($QIS_NATS_URL).
    Nats,
    /// Redis Streams + Pub/Sub ($QIS_REDIS_URL).
    Redis,
    /// Kafka ($QIS_KAFKA_URL).
    Kafka,
    /// ChromaDB ($QIS_CHROMA_URL): deposits and similar twins only.
    Chroma,
}

impl BackendName {
    /// The lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            BackendName::Memory => "memory",
            BackendName::Sqlite => "sqlite",
            BackendName::Nats => "nats",
            BackendName::Redis => "redis",
            BackendName::Kafka => "kafka",
            BackendName::Chroma => "chroma",
        }
    }
}

/// `qis compare`.
#[derive(Debug, Args)]
pub struct CompareArgs {
    /// Backends to compare, comma separated (memory, sqlite, nats, redis, kafka, chroma).
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "sqlite,nats,redis,kafka"
    )]
    pub transports: Vec<BackendName>,

    /// URLs overriding the defaults: name=url,... (defaults: $QIS_NATS_URL,
    /// $QIS_REDIS_URL, $QIS_KAFKA_URL, $QIS_CHROMA_URL, a temporary SQLite
    /// file, memory://).
    #[arg(long, value_name = "NAME=URL,...")]
    pub urls: Vec<String>,

    /// Packets deposited per backend (a quarter one at a time, the rest in batches).
    #[arg(long, value_name = "N", default_value_t = 2000, value_parser = clap::value_parser!(u32).range(4..=1_000_000))]
    pub packets: u32,

    /// On backends with similarity search: packets stored when similarity
    /// query latency is measured (the scenario's, topped up); 0 skips it.
    #[arg(long, value_name = "N", default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(0..=1_000_000))]
    pub similar_stored: u32,

    /// Where to write the SVG chart.
    #[arg(long, value_name = "PATH", default_value = "compare.svg")]
    pub svg: PathBuf,

    /// Print the results as JSON instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// `qis series-merge`: what `scripts/series.sh` runs after measuring.
#[derive(Debug, Args)]
pub struct SeriesMergeArgs {
    /// A `qis compare --json` output (repeatable: the rows of all are merged).
    #[arg(long = "compare", value_name = "FILE", required = true)]
    pub compare: Vec<PathBuf>,

    /// The server figures, one JSON object per backend and line (binary_bytes,
    /// first_ack_ms, rss_idle_kb, rss_after_kb, disk_bytes, ...), as
    /// scripts/series.sh writes them.
    #[arg(long, value_name = "FILE")]
    pub ops: PathBuf,

    /// Folder for series.md, series.json and series.svg.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,

    /// The command that produced the figures, quoted under the table.
    #[arg(long, value_name = "TEXT")]
    pub command: Option<String>,
}

/// `qis bridge`.
#[derive(Debug, Args)]
pub struct BridgeArgs {
    /// Where packets come from: a transport URL (the global --url is not used).
    #[arg(long, value_name = "URL")]
    pub from: String,

    /// Where packets go: a transport URL. It may be unreachable at start: the
    /// bridge connects (again) with backoff until it answers.
    #[arg(long, value_name = "URL")]
    pub to: String,

    /// Forward only subjects matching PATTERN [default: everything under the source's prefix].
    #[arg(long, value_name = "PATTERN", value_parser = parse_pattern)]
    pub pattern: Option<SubjectPattern>,

    /// The durable consumer's name on the source: a bridge started again with
    /// the same name resumes where it stopped.
    #[arg(long, value_name = "NAME", default_value = "qis-bridge")]
    pub name: String,

    /// Forward only packets produced on these nodes (their source_node), comma
    /// separated; NAME* matches a family (the device → hub direction).
    #[arg(
        long,
        value_name = "NODE,...",
        value_delimiter = ',',
        conflicts_with = "except_origin"
    )]
    pub origin: Vec<String>,

    /// Forward every packet except those produced on these nodes (the hub →
    /// device direction), comma separated; NAME* matches a family.
    #[arg(long, value_name = "NODE,...", value_delimiter = ',')]
    pub except_origin: Vec<String>,

    /// Most packets per batch.
    #[arg(long, value_name = "N", default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub batch: u32,

    /// A batch fetched but not forwarded and acked within this time is
    /// delivered to the bridge again (after a crash: sent again).
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub ack_wait: Duration,

    /// Longest pause between attempts to reach a side that is down (the
    /// pauses grow from 100 ms, with jitter).
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub max_backoff: Duration,

    /// How often a progress line is printed when stdout is not a terminal.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration)]
    pub interval: Duration,

    /// Print progress as one JSON object per line (the bridge status and the rate).
    #[arg(long)]
    pub json: bool,
}

/// `qis status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Only these consumers, comma separated [default: every consumer the
    /// transport lists under the prefix].
    #[arg(long, value_name = "NAME,...", value_delimiter = ',')]
    pub consumer: Vec<String>,

    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn grammar_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn context_vector_with_a_leading_minus() {
        let cli = Cli::try_parse_from([
            "qis",
            "fingerprint",
            "--domain",
            "hvac",
            "--problem-class",
            "p",
            "--context",
            "-0.5,0.25",
        ])
        .unwrap();
        let Command::Fingerprint(args) = cli.command else {
            panic!("parsed as another command")
        };
        assert_eq!(args.context.0, vec![-0.5, 0.25]);
    }

    #[test]
    fn synth_options() {
        let cli = Cli::try_parse_from([
            "qis",
            "synth",
            "hvac",
            "x",
            "--consumer",
            "c",
            "--method",
            "seed",
            "--quorum",
            "1",
            "--half-life",
            "1h",
            "--no-outliers",
            "--now",
            "5",
        ])
        .unwrap();
        let Command::Synth(args) = cli.command else {
            panic!("not synth")
        };
        let c = args.options.config().unwrap();
        assert_eq!(c.method(), qis::Method::Seed);
        assert_eq!(c.quorum(), 1);
        assert_eq!(c.half_life(), Some(Duration::from_secs(3600)));
        assert!(!c.outliers());
        assert_eq!(c.now(), Some(5.0));
        // The last of --outliers / --no-outliers wins; on by default.
        let parse = |extra: &[&str]| {
            let mut v = vec!["qis", "synth", "hvac", "x", "--consumer", "c"];
            v.extend(extra);
            match Cli::try_parse_from(v).unwrap().command {
                Command::Synth(a) => a.options.config().unwrap().outliers(),
                _ => unreachable!(),
            }
        };
        assert!(parse(&[]));
        assert!(!parse(&["--outliers", "--no-outliers"]));
        assert!(parse(&["--no-outliers", "--outliers"]));
    }
}
