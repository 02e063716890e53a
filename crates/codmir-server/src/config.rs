//! The server's settings, filled in by the CLI.

use std::time::Duration;

use codmir_core::retry::RetrySchedule;

#[derive(Debug, Clone)]
pub struct Config {
    /// Allow webhook URLs on loopback, private and link-local addresses (local development).
    pub allow_private_targets: bool,
    /// Delays between delivery attempts; its length is the number of retries.
    pub retry_schedule: RetrySchedule,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    /// How long a graceful shutdown waits for in-flight deliveries.
    pub shutdown_grace: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            allow_private_targets: false,
            retry_schedule: RetrySchedule::default(),
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(15),
            shutdown_grace: Duration::from_secs(10),
        }
    }
}
