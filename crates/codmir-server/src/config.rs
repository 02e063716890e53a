//! The server's settings, filled in by the CLI.

use std::time::Duration;

use codmir_core::retry::RetrySchedule;
use codmir_core::target::{Cidr, TargetPolicy};
use codmir_core::webhook::DisablePolicy;

use crate::listen::ConnectionLimits;

#[derive(Debug, Clone)]
pub struct Config {
    /// Allow webhook URLs on loopback, private and link-local addresses (local development).
    pub allow_private_targets: bool,
    /// Networks webhooks may reach although they are not public (`--allow-cidr`).
    pub allowed_cidrs: Vec<Cidr>,
    /// Refuse `http://` endpoints (`--https-only`).
    pub https_only: bool,
    /// Requests per second per API key (a burst of twice that); `None`: no limit.
    pub api_rate_limit: Option<u32>,
    /// Bounds on the API's connections (`--max-connections`, `--header-read-timeout`).
    pub connection_limits: ConnectionLimits,
    /// Delays between delivery attempts; its length is the number of retries.
    pub retry_schedule: RetrySchedule,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    /// How long a graceful shutdown waits for in-flight deliveries.
    pub shutdown_grace: Duration,
    /// How long one API request may take before it is answered 503. A request past it is
    /// dropped; a POST with an `Idempotency-Key` still runs to its end and keeps its answer
    /// for a retry (`api::idempotency`).
    pub api_timeout: Duration,
    /// How long an `Idempotency-Key` claim without an answer stands before a retry may take
    /// it over: past the API's time bound, which a request's own work does not outlive but
    /// for a stalled commit (`api::idempotency`).
    pub idempotency_takeover: Duration,
    /// Most attempts in flight to one webhook at once, so a slow endpoint uses only its share.
    pub max_in_flight_per_endpoint: usize,
    /// Most attempts in flight in all.
    pub max_in_flight: usize,
    /// A ceiling on one workspace's attempts in flight. Without one, a workspace gets its fair
    /// share: the slots left after a reserve, divided among the workspaces that have work
    /// (`codmir_core::share`).
    pub max_in_flight_per_workspace: Option<usize>,
    /// Most attempts in flight from one workspace to one host and port, across its webhooks
    /// (amplification); another workspace's attempts to the same host do not count.
    pub max_in_flight_per_host: usize,
    /// Most webhooks one workspace may register.
    pub max_webhooks_per_workspace: usize,
    /// Most deliveries one workspace may have pending: a replay, a redelivery or a tracker
    /// change whose deliveries would pass it is refused (429).
    pub max_pending_per_workspace: u64,
    /// How long a claimed delivery stays leased to this node. Must exceed `request_timeout`:
    /// when a node dies, others take its claimed deliveries over once their leases expire.
    pub lease_duration: Duration,
    /// When a failing webhook is disabled automatically.
    pub disable_policy: DisablePolicy,
    /// How long events, deliveries and attempts are kept; `None` keeps them forever.
    pub retention: Option<Duration>,
    /// How often retention looks for old rows...
    pub retention_interval: Duration,
    /// ...and how many of each kind it deletes per unit of work.
    pub retention_batch: u32,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            allow_private_targets: false,
            allowed_cidrs: Vec::new(),
            https_only: false,
            connection_limits: ConnectionLimits::default(),
            api_rate_limit: None,
            retry_schedule: RetrySchedule::default(),
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(15),
            shutdown_grace: Duration::from_secs(10),
            api_timeout: Duration::from_secs(30),
            idempotency_takeover: Duration::from_secs(60),
            max_in_flight_per_endpoint: 64,
            max_in_flight: 512,
            max_in_flight_per_workspace: None,
            max_in_flight_per_host: 128,
            max_webhooks_per_workspace: 100,
            max_pending_per_workspace: 1_000_000,
            lease_duration: Duration::from_secs(60),
            disable_policy: DisablePolicy::default(),
            retention: Some(Duration::from_secs(30 * 86_400)),
            retention_interval: Duration::from_secs(600),
            // ~7 ms of the SQLite writer per batch on this machine class: what an API request
            // queued behind one waits at most (1,000 made the API's p99 18 ms during a pass).
            retention_batch: 250,
        }
    }
}

impl Config {
    /// Where webhooks may send: what registration and every attempt check.
    pub fn target_policy(&self) -> TargetPolicy {
        TargetPolicy {
            allow_private: self.allow_private_targets,
            allowed: self.allowed_cidrs.clone(),
            https_only: self.https_only,
        }
    }

    /// How the delivery slots are shared (`codmir_core::share`).
    pub fn shares(&self) -> codmir_core::share::Shares {
        codmir_core::share::Shares {
            total: self.max_in_flight,
            per_workspace: self.max_in_flight_per_workspace,
            per_endpoint: self.max_in_flight_per_endpoint,
            per_destination: self.max_in_flight_per_host,
        }
    }
}
