//! The work this node holds a lease on, per webhook, in two lanes, and the attempts in
//! flight: which queued deliveries may start now, within the per-webhook and node bounds.
//! Plain data, owned by the engine loop, tested without a runtime.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use codmir_core::time::Timestamp;

use crate::store::Leased;

/// Deliveries this node holds a lease on, waiting for their webhook's share of capacity, and
/// the attempts in flight. Owned by the engine loop alone.
///
/// Two lanes: [`Lane::Fresh`] holds what this node's API just committed (the fast path) and is
/// always started first; [`Lane::Claimed`] holds what came from the database (retries coming
/// due, a backlog, other nodes' expired work). While the API is busy, claimed attempts start at most at
/// a bounded rate (the budget, `budget.rs`), so that draining a backlog does not take the CPU
/// and the writer from the requests being served and from their fresh deliveries.
#[derive(Default)]
pub(super) struct Local {
    /// Per lane, per webhook; a queue is removed once empty.
    lanes: [HashMap<String, VecDeque<Leased>>; 2],
    in_flight: HashMap<String, usize>,
    /// Attempts in flight per workspace and per destination host (fairness between tenants,
    /// and a bound on what one host receives across webhooks), and, per webhook with
    /// attempts in flight, the workspace and host they are counted under.
    by_workspace: HashMap<String, usize>,
    by_host: HashMap<String, usize>,
    owners: HashMap<String, (String, String)>,
    pub(super) total_in_flight: usize,
    pub(super) queued: usize,
    /// Per rate-limited webhook, the earliest instant its next attempt may start.
    next_slot: HashMap<String, Instant>,
    /// The earliest instant a webhook held back by its rate limit may start again, as of the
    /// last `take_ready`.
    pub(super) rate_wait: Option<Instant>,
}

/// Where a queued delivery came from; the index of its lane in [`Local::lanes`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Lane {
    Fresh = 0,
    Claimed = 1,
}

/// How many attempts may be in flight (on the node, per webhook), how many claimed ones may
/// start now, and the lease a queued delivery must still hold to be started.
pub(super) struct Bounds {
    pub(super) total: usize,
    pub(super) per_endpoint: usize,
    pub(super) per_workspace: usize,
    pub(super) per_host: usize,
    pub(super) claimed: usize,
    pub(super) lease_deadline: Timestamp,
    /// Now, for the per-webhook rate limits.
    pub(super) now: Instant,
}

impl Local {
    pub(super) fn push(&mut self, lane: Lane, c: Leased) {
        self.queued += 1;
        self.lanes[lane as usize]
            .entry(c.webhook.id.clone())
            .or_default()
            .push_back(c);
    }

    /// Deliveries of `webhook` queued here, in both lanes.
    pub(super) fn queued_for(&self, webhook: &str) -> usize {
        self.lanes
            .iter()
            .map(|lane| lane.get(webhook).map_or(0, VecDeque::len))
            .sum()
    }

    /// Drops what is queued for `webhook`.
    pub(super) fn forget(&mut self, webhook: &str) {
        for lane in &mut self.lanes {
            if let Some(queue) = lane.remove(webhook) {
                self.queued -= queue.len();
            }
        }
    }

    /// Takes the queued deliveries that may start now within `bounds`, fresh ones first, and
    /// counts them in flight. Each comes with whether it is claimed work. A webhook's own
    /// `max_in_flight` lowers the per-endpoint bound for it, and its `rate_limit_per_second`
    /// spaces its attempts by at least 1/rate (no bursts); [`Local::rate_wait`] says when the
    /// first one held back by a rate may start.
    pub(super) fn take_ready(&mut self, bounds: &Bounds) -> Vec<(Leased, bool)> {
        let mut ready = Vec::new();
        let mut claimed_started = 0;
        let mut rate_wait: Option<Instant> = None;
        for lane in [Lane::Fresh, Lane::Claimed] {
            let claimed = lane == Lane::Claimed;
            self.lanes[lane as usize].retain(|webhook, queue| {
                while self.total_in_flight < bounds.total
                    && (!claimed || claimed_started < bounds.claimed)
                {
                    let Some(front) = queue.front() else { break };
                    let cap = front
                        .webhook
                        .max_in_flight
                        .map_or(bounds.per_endpoint, |m| {
                            (m as usize).min(bounds.per_endpoint)
                        });
                    let busy = self.in_flight.get(webhook).copied().unwrap_or(0);
                    if busy >= cap {
                        break;
                    }
                    let workspace = front.webhook.workspace_id.as_str();
                    let host = host_of(front.webhook.url.as_str());
                    if count(&self.by_workspace, workspace) >= bounds.per_workspace
                        || count(&self.by_host, host) >= bounds.per_host
                    {
                        break;
                    }
                    if let Some(rate) = front.webhook.rate_limit_per_second {
                        let slot = self.next_slot.get(webhook).copied();
                        if let Some(at) = slot.filter(|at| *at > bounds.now) {
                            rate_wait = Some(rate_wait.map_or(at, |w| w.min(at)));
                            break;
                        }
                        let spacing = Duration::from_secs_f64(1.0 / f64::from(rate.max(1)));
                        let from = slot.map_or(bounds.now, |at| at.max(bounds.now));
                        self.next_slot.insert(webhook.clone(), from + spacing);
                    }
                    let Some(c) = queue.pop_front() else { break };
                    self.queued -= 1;
                    if c.lease_until < bounds.lease_deadline {
                        continue;
                    }
                    let host = host_of(c.webhook.url.as_str());
                    bump(&mut self.by_workspace, &c.webhook.workspace_id);
                    bump(&mut self.by_host, host);
                    if busy == 0 {
                        self.owners.insert(
                            webhook.clone(),
                            (c.webhook.workspace_id.clone(), host.to_owned()),
                        );
                    }
                    *self.in_flight.entry(webhook.clone()).or_default() += 1;
                    self.total_in_flight += 1;
                    if claimed {
                        claimed_started += 1;
                    }
                    ready.push((c, claimed));
                }
                !queue.is_empty()
            });
        }
        self.rate_wait = rate_wait;
        ready
    }

    /// Webhooks that already hold enough work here: no more claims for them.
    pub(super) fn full(&self, per_endpoint: usize) -> Vec<String> {
        let [fresh, claimed] = &self.lanes;
        // Each webhook once: those of the fresh lane, then those only in the claimed lane.
        fresh
            .keys()
            .chain(claimed.keys().filter(|id| !fresh.contains_key(*id)))
            .filter(|id| {
                self.queued_for(id) + self.in_flight.get(*id).copied().unwrap_or(0)
                    >= 2 * per_endpoint
            })
            .cloned()
            .collect()
    }
}

impl Local {
    /// Accounts for a finished attempt task. True when its webhook was left out of the last
    /// claim and now has room for more.
    pub(super) fn finished(
        &mut self,
        done: Result<String, tokio::task::JoinError>,
        per_endpoint: usize,
        skipped: &[String],
    ) -> bool {
        let local = self;
        local.total_in_flight -= 1;
        // An attempt task does not panic (nothing in it unwraps); if one ever did, its webhook's
        // share would stay one lower until the node restarts.
        let Ok(webhook) = done else { return false };
        let busy = match local.in_flight.get_mut(&webhook) {
            Some(n) => {
                *n -= 1;
                let busy = *n;
                if busy == 0 {
                    local.in_flight.remove(&webhook);
                }
                busy
            }
            None => 0,
        };
        if let Some((workspace, host)) = local.owners.get(&webhook) {
            drop_one(&mut local.by_workspace, workspace);
            drop_one(&mut local.by_host, host);
        }
        if busy == 0 {
            local.owners.remove(&webhook);
        }
        skipped.contains(&webhook) && busy + local.queued_for(&webhook) < 2 * per_endpoint
    }
}

/// The host of a stored (already validated and normalized) URL, without port: what the
/// per-host bound counts by.
fn host_of(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or(rest);
    match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(v6),
        None => authority.split(':').next().unwrap_or(authority),
    }
}

fn count(map: &HashMap<String, usize>, key: &str) -> usize {
    map.get(key).copied().unwrap_or(0)
}

/// Counts one more under `key`, allocating the key only the first time.
fn bump(map: &mut HashMap<String, usize>, key: &str) {
    match map.get_mut(key) {
        Some(n) => *n += 1,
        None => {
            map.insert(key.to_owned(), 1);
        }
    }
}

fn drop_one(map: &mut HashMap<String, usize>, key: &str) {
    if let Some(n) = map.get_mut(key) {
        *n -= 1;
        if *n == 0 {
            map.remove(key);
        }
    }
}

impl Local {
    /// Whether claimed work is waiting.
    pub(super) fn claimed_waiting(&self) -> bool {
        !self.lanes[Lane::Claimed as usize].is_empty()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use codmir_core::event::EventType;
    use codmir_core::webhook::{Delivery, EndpointUrl, EventFilter, Webhook, WebhookSecret};

    use super::*;

    fn queued(webhook: &str, n: u32) -> Leased {
        let now = Timestamp::from_millis(1_000_000);
        Leased {
            delivery: Delivery {
                id: format!("dlv_{webhook}_{n}"),
                ..Delivery::new(
                    "ws",
                    webhook,
                    &format!("evt_{n}"),
                    EventType::TicketCreated,
                    now,
                )
            },
            webhook: Arc::new(Webhook::new(
                webhook.into(),
                "ws".into(),
                EndpointUrl::from_stored("https://example.com/hook".into()),
                EventFilter::parse(&["*"]).expect("valid filter"),
                WebhookSecret::parse("s3cret-s3cret-s3cret").expect("valid secret"),
                now,
            )),
            payload: Arc::from("{}"),
            lease_until: now.plus(Duration::from_secs(60)),
        }
    }

    fn bounds(claimed: usize) -> Bounds {
        Bounds {
            total: 10,
            per_endpoint: 4,
            per_workspace: 10,
            per_host: 10,
            claimed,
            lease_deadline: Timestamp::from_millis(1_000_000),
            now: Instant::now(),
        }
    }

    fn ids(ready: &[(Leased, bool)]) -> Vec<String> {
        ready.iter().map(|(c, _)| c.delivery.id.clone()).collect()
    }

    #[test]
    fn fresh_deliveries_start_before_claimed_ones_of_the_same_webhook() {
        let mut local = Local::default();
        for n in 0..3 {
            local.push(Lane::Claimed, queued("a", n));
        }
        local.push(Lane::Fresh, queued("a", 9));
        let ready = local.take_ready(&bounds(10));
        // Four at most for the webhook: the fresh one first, then three claimed.
        assert_eq!(ids(&ready), ["dlv_a_9", "dlv_a_0", "dlv_a_1", "dlv_a_2"]);
        assert_eq!(
            ready
                .iter()
                .map(|(_, claimed)| *claimed)
                .collect::<Vec<_>>(),
            [false, true, true, true]
        );
        assert_eq!((local.queued, local.total_in_flight), (0, 4));
    }

    #[test]
    fn claimed_work_is_held_to_its_budget_while_fresh_work_is_not() {
        let mut local = Local::default();
        for n in 0..5 {
            local.push(Lane::Claimed, queued("a", n));
            local.push(Lane::Fresh, queued("b", n));
        }
        let ready = local.take_ready(&bounds(1));
        let claimed = ready.iter().filter(|(_, c)| *c).count();
        assert_eq!(claimed, 1, "one claimed attempt for a budget of one");
        assert_eq!(
            ready.len() - claimed,
            4,
            "fresh work up to the webhook's share"
        );
        assert_eq!(local.queued, 5);
        // With the budget spent, claimed work waits; fresh work waits only for its webhook.
        assert!(local.take_ready(&bounds(0)).is_empty());
        local.finished(Ok("b".into()), 4, &[]);
        assert_eq!(ids(&local.take_ready(&bounds(0))), ["dlv_b_4"]);
        assert_eq!(ids(&local.take_ready(&bounds(2))), ["dlv_a_1", "dlv_a_2"]);
    }

    #[test]
    fn a_workspace_and_a_host_get_their_share_and_no_more() {
        let mut local = Local::default();
        for n in 0..4 {
            local.push(Lane::Fresh, queued("a", n));
            local.push(Lane::Fresh, queued("b", n));
        }
        let mut other = queued("c", 0);
        let hook = Arc::make_mut(&mut other.webhook);
        hook.workspace_id = "ws2".into();
        hook.url = EndpointUrl::from_stored("https://elsewhere.example/x".into());
        local.push(Lane::Fresh, other);
        let tight = Bounds {
            per_workspace: 3,
            ..bounds(10)
        };
        let ready = local.take_ready(&tight);
        let of = |ws: &str| {
            ready
                .iter()
                .filter(|(c, _)| c.webhook.workspace_id == ws)
                .count()
        };
        assert_eq!(
            (of("ws"), of("ws2")),
            (3, 1),
            "ws holds 3 of 10, the other tenant starts"
        );
        // When one of ws's attempts ends, one more of ws may start.
        let started = ready
            .iter()
            .find(|(c, _)| c.webhook.workspace_id == "ws")
            .map(|(c, _)| c.webhook.id.clone());
        local.finished(Ok(started.unwrap_or_default()), 4, &[]);
        assert_eq!(local.take_ready(&tight).len(), 1);
        assert_eq!(host_of("https://[::1]:8443/x"), "::1");
        assert_eq!(host_of("http://Example.com:80/a?b"), "Example.com");
        let mut local = Local::default();
        for n in 0..6 {
            local.push(Lane::Fresh, queued(&format!("w{n}"), n));
        }
        let per_host = Bounds {
            per_host: 2,
            ..bounds(10)
        };
        assert_eq!(
            local.take_ready(&per_host).len(),
            2,
            "six webhooks, one host"
        );
    }

    #[test]
    fn a_delivery_whose_lease_runs_out_is_left_for_a_claim() {
        let mut local = Local::default();
        let mut late = queued("a", 0);
        late.lease_until = Timestamp::from_millis(999_999);
        local.push(Lane::Fresh, late);
        local.push(Lane::Fresh, queued("a", 1));
        assert_eq!(ids(&local.take_ready(&bounds(10))), ["dlv_a_1"]);
        assert_eq!((local.queued, local.total_in_flight), (0, 1));
    }
}
