//! The work this node holds a lease on, per webhook, in two lanes, and the attempts in
//! flight: which queued deliveries may start now, within the per-webhook and node bounds.
//! Plain data, owned by the engine loop, tested without a runtime (`queues/tests.rs`).
//!
//! One concept, kept whole: the queues and the counts that bound them change together (a
//! start moves a delivery from a queue into the counts, an end moves it out), so they read
//! best side by side.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use codmir_core::share::{self, OVERDUE_AFTER, Pace, Shares};
use codmir_core::time::Timestamp;

use crate::store::Leased;

/// Deliveries this node holds a lease on, waiting for their turn, and the attempts in flight.
/// Owned by the engine loop alone.
///
/// Two lanes: [`Lane::Fresh`] holds what this node's API just committed (the fast path) and is
/// always started first; [`Lane::Claimed`] holds what came from the database (retries coming
/// due, a backlog, other nodes' expired work). While the API is busy, claimed attempts start at
/// most at a bounded rate (the budget, `budget.rs`), so that draining a backlog does not take
/// the CPU and the writer from the requests being served and from their fresh deliveries.
///
/// Within a lane, workspaces take turns least-served first (the one with the fewest attempts
/// in flight starts next), and a workspace's webhooks take turns in order; the bounds each
/// start must stay within are `codmir_core::share`'s.
#[derive(Default)]
pub(super) struct Local {
    /// Per lane, per workspace; a workspace is removed once nothing of it is queued there.
    lanes: [HashMap<String, Tenant>; 2],
    counts: Counts,
    pub(super) queued: usize,
    /// The earliest instant a delivery held back may start, as of the last `take_ready`: its
    /// webhook's next rate-limit slot, or its destination's next attempt turning overdue.
    pub(super) next_look: Option<Instant>,
}

/// One workspace's queued work in one lane.
#[derive(Default)]
struct Tenant {
    /// Its webhooks with queued work, in the order they take turns.
    turn: VecDeque<String>,
    queues: HashMap<String, VecDeque<Leased>>,
}

/// What is held where: the counts every start is bounded by.
#[derive(Default)]
struct Counts {
    /// Per workspace with work queued or in flight here.
    workspaces: HashMap<String, Held>,
    /// Attempts in flight per webhook, per workspace (for its overdue ones; `Held` counts
    /// them) and per workspace and destination (host and port).
    by_webhook: Started,
    by_workspace: Started,
    by_destination: Started,
    /// Per webhook with attempts in flight, the workspace and destination they count under.
    owners: HashMap<String, (String, String)>,
    /// How recent attempts went, per webhook and per workspace; kept only while not clear.
    webhook_pace: HashMap<String, Pace>,
    workspace_pace: HashMap<String, Pace>,
    total_in_flight: usize,
    /// Per rate-limited webhook, the earliest instant its next attempt may start.
    next_slot: HashMap<String, Instant>,
    /// The destination key being looked at, kept to be written over (no allocation per look).
    scratch: String,
}

#[derive(Default, Clone, Copy)]
struct Held {
    queued: usize,
    in_flight: usize,
}

/// Where a queued delivery came from; the index of its lane in [`Local::lanes`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Lane {
    Fresh = 0,
    Claimed = 1,
}

/// How attempts are shared, how many claimed ones may start now, and the lease a queued
/// delivery must still hold to be started.
pub(super) struct Bounds {
    pub(super) shares: Shares,
    pub(super) claimed: usize,
    pub(super) lease_deadline: Timestamp,
    /// Now, for the per-webhook rate limits.
    pub(super) now: Instant,
}

/// How a finished attempt task reports back: its webhook, whether the attempt was slow, and
/// the instant `take_ready` started it (its `Bounds::now`).
pub(super) type Finished = (String, bool, Instant);

/// Attempts in flight by key (a webhook, a workspace, a workspace's destination), as the
/// instants they started, in order: those in flight for `OVERDUE_AFTER` are overdue.
#[derive(Default)]
struct Started(HashMap<String, VecDeque<Instant>>);

impl Started {
    fn len(&self, key: &str) -> usize {
        self.0.get(key).map_or(0, VecDeque::len)
    }

    /// How many of `key`'s attempts are overdue at `now`, and when the next one turns so.
    fn overdue(&self, key: &str, now: Instant) -> (usize, Option<Instant>) {
        let Some(started) = self.0.get(key) else {
            return (0, None);
        };
        let overdue = started.partition_point(|at| *at + OVERDUE_AFTER <= now);
        (overdue, started.get(overdue).map(|at| *at + OVERDUE_AFTER))
    }

    /// Counts an attempt started at `at` (no earlier than any before it), allocating the key
    /// only the first time.
    fn start(&mut self, key: &str, at: Instant) {
        match self.0.get_mut(key) {
            Some(started) => started.push_back(at),
            None => {
                self.0.insert(key.to_owned(), VecDeque::from([at]));
            }
        }
    }

    /// Forgets the attempt that started at `at`.
    fn end(&mut self, key: &str, at: Instant) {
        let Some(started) = self.0.get_mut(key) else {
            return;
        };
        let i = started.partition_point(|s| *s < at);
        if started.get(i) == Some(&at) {
            started.remove(i);
        } else {
            // Not found (cannot happen: every end has its start): one less all the same.
            started.pop_front();
        }
        if started.is_empty() {
            self.0.remove(key);
        }
    }
}

impl Local {
    pub(super) fn push(&mut self, lane: Lane, c: Leased) {
        self.queued += 1;
        let workspace = &c.webhook.workspace_id;
        held_mut(&mut self.counts.workspaces, workspace).queued += 1;
        let tenant = match self.lanes[lane as usize].get_mut(workspace) {
            Some(t) => t,
            None => self.lanes[lane as usize]
                .entry(workspace.clone())
                .or_default(),
        };
        match tenant.queues.get_mut(&c.webhook.id) {
            Some(queue) => queue.push_back(c),
            None => {
                tenant.turn.push_back(c.webhook.id.clone());
                tenant
                    .queues
                    .insert(c.webhook.id.clone(), VecDeque::from([c]));
            }
        }
    }

    pub(super) fn total_in_flight(&self) -> usize {
        self.counts.total_in_flight
    }

    /// Deliveries of `webhook` (of `workspace`) queued here, in both lanes.
    fn queued_for(&self, workspace: &str, webhook: &str) -> usize {
        queued_in(&self.lanes, workspace, webhook)
    }

    /// Drops what is queued for `webhook`.
    pub(super) fn forget(&mut self, webhook: &str) {
        for lane in &mut self.lanes {
            lane.retain(|workspace, tenant| {
                if let Some(queue) = tenant.queues.remove(webhook) {
                    self.queued -= queue.len();
                    tenant.turn.retain(|w| w != webhook);
                    self.counts.unqueue(workspace, queue.len());
                }
                !tenant.turn.is_empty()
            });
        }
    }

    /// Takes the queued deliveries that may start now within `bounds`, fresh ones first, and
    /// counts them in flight. Each comes with whether it is claimed work. A webhook's
    /// `rate_limit_per_second` spaces its attempts by at least 1/rate (no bursts);
    /// [`Local::next_look`] says when the first one held back by a rate or by its destination's
    /// bound may start.
    pub(super) fn take_ready(&mut self, bounds: &Bounds) -> Vec<(Leased, bool)> {
        let mut ready = Vec::new();
        let mut claimed_started = 0;
        let mut next_look: Option<Instant> = None;
        let active = self.counts.workspaces.len();
        for lane in [Lane::Fresh, Lane::Claimed] {
            let claimed = lane == Lane::Claimed;
            let tenants = &mut self.lanes[lane as usize];
            let mut turns: BinaryHeap<Reverse<(usize, String)>> = tenants
                .keys()
                .map(|ws| Reverse((self.counts.held(ws).in_flight, ws.clone())))
                .collect();
            while let Some(Reverse((_, workspace))) = turns.pop() {
                if claimed && claimed_started >= bounds.claimed {
                    break;
                }
                let pace = self.counts.workspace_pace(&workspace);
                let cap = bounds.shares.workspace_cap(active, pace);
                let full_cap = bounds.shares.workspace_cap(active, Pace::default());
                let held = self.counts.held(&workspace).in_flight;
                let (overdue, next) = self.counts.by_workspace.overdue(&workspace, bounds.now);
                let counted = share::counted(pace, held, overdue);
                if held >= full_cap
                    || !bounds
                        .shares
                        .may_start(counted, cap, self.counts.total_in_flight)
                {
                    if pace.hanging() {
                        look_at(&mut next_look, next);
                    }
                    continue;
                }
                let Some(tenant) = tenants.get_mut(&workspace) else {
                    continue;
                };
                let started = self.counts.start_one(
                    tenant,
                    &workspace,
                    bounds,
                    &mut self.queued,
                    &mut next_look,
                );
                if tenant.turn.is_empty() {
                    tenants.remove(&workspace);
                }
                if let Some(c) = started {
                    ready.push((c, claimed));
                    if claimed {
                        claimed_started += 1;
                    }
                    if tenants.contains_key(&workspace) {
                        let in_flight = self.counts.held(&workspace).in_flight;
                        turns.push(Reverse((in_flight, workspace)));
                    }
                }
            }
        }
        self.counts.tidy();
        self.next_look = next_look;
        ready
    }

    /// Webhooks that already hold enough work here: no more claims for them.
    pub(super) fn full(&self, per_endpoint: usize) -> Vec<String> {
        let mut full = Vec::new();
        for (workspace, tenant) in self.lanes.iter().flat_map(HashMap::iter) {
            for webhook in &tenant.turn {
                let held =
                    self.queued_for(workspace, webhook) + self.counts.by_webhook.len(webhook);
                if held >= 2 * per_endpoint && !full.contains(webhook) {
                    full.push(webhook.clone());
                }
            }
        }
        full
    }

    /// Accounts for a finished attempt task. True when its webhook was left out of the last
    /// claim and now has room for more.
    pub(super) fn finished(
        &mut self,
        done: Result<Finished, tokio::task::JoinError>,
        per_endpoint: usize,
        skipped: &[String],
    ) -> bool {
        let counts = &mut self.counts;
        counts.total_in_flight -= 1;
        // An attempt task does not panic (nothing in it unwraps); if one ever did, its webhook's
        // share would stay one lower until the node restarts.
        let Ok((webhook, slow, started)) = done else {
            return false;
        };
        counts.by_webhook.end(&webhook, started);
        let busy = counts.by_webhook.len(&webhook);
        pace_after(&mut counts.webhook_pace, &webhook, slow);
        // The webhook's workspace and destination, taken out with its last attempt, borrowed
        // (not copied) while others are in flight.
        let removed = if busy == 0 {
            counts.owners.remove(&webhook)
        } else {
            None
        };
        let Some((workspace, destination)) = removed
            .as_ref()
            .or_else(|| counts.owners.get(&webhook))
            .map(|(w, d)| (w.as_str(), d.as_str()))
        else {
            return false;
        };
        counts.by_destination.end(destination, started);
        counts.by_workspace.end(workspace, started);
        pace_after(&mut counts.workspace_pace, workspace, slow);
        if let Some(held) = counts.workspaces.get_mut(workspace) {
            held.in_flight -= 1;
            if held.queued == 0 && held.in_flight == 0 {
                counts.workspaces.remove(workspace);
            }
        }
        skipped.contains(&webhook)
            && busy + queued_in(&self.lanes, workspace, &webhook) < 2 * per_endpoint
    }

    /// Whether claimed work is waiting.
    pub(super) fn claimed_waiting(&self) -> bool {
        !self.lanes[Lane::Claimed as usize].is_empty()
    }
}

impl Counts {
    fn held(&self, workspace: &str) -> Held {
        self.workspaces.get(workspace).copied().unwrap_or_default()
    }

    fn workspace_pace(&self, workspace: &str) -> Pace {
        self.workspace_pace
            .get(workspace)
            .copied()
            .unwrap_or_default()
    }

    fn unqueue(&mut self, workspace: &str, n: usize) {
        if let Some(held) = self.workspaces.get_mut(workspace) {
            held.queued -= n;
        }
        self.tidy_one(workspace);
    }

    /// Forgets a workspace with nothing queued or in flight: it no longer counts as active.
    fn tidy_one(&mut self, workspace: &str) {
        if let Some(held) = self.workspaces.get(workspace)
            && held.queued == 0
            && held.in_flight == 0
        {
            self.workspaces.remove(workspace);
        }
    }

    fn tidy(&mut self) {
        self.workspaces
            .retain(|_, held| held.queued > 0 || held.in_flight > 0);
    }

    /// Starts the first delivery of `tenant`'s webhooks, in their turn, that its bounds let
    /// start; a webhook whose turn passes goes to the back. Deliveries whose lease would run
    /// out during their attempt are dropped on the way (left for a claim).
    fn start_one(
        &mut self,
        tenant: &mut Tenant,
        workspace: &str,
        bounds: &Bounds,
        queued: &mut usize,
        next_look: &mut Option<Instant>,
    ) -> Option<Leased> {
        for _ in 0..tenant.turn.len() {
            let webhook = tenant.turn.pop_front()?;
            let Some(queue) = tenant.queues.get_mut(&webhook) else {
                continue;
            };
            while queue
                .front()
                .is_some_and(|c| c.lease_until < bounds.lease_deadline)
            {
                queue.pop_front();
                *queued -= 1;
                held_mut(&mut self.workspaces, workspace).queued -= 1;
            }
            let Some(front) = queue.front() else {
                tenant.queues.remove(&webhook);
                continue;
            };
            let pace = self.webhook_pace.get(&webhook).copied().unwrap_or_default();
            let own = front.webhook.max_in_flight;
            let cap = bounds.shares.endpoint_cap(own, pace);
            let full_cap = bounds.shares.endpoint_cap(own, Pace::default());
            let busy = self.by_webhook.len(&webhook);
            let (overdue, next) = self.by_webhook.overdue(&webhook, bounds.now);
            destination_into(&mut self.scratch, workspace, front.webhook.url.as_str());
            let (at_host, host_next) = self.by_destination.overdue(&self.scratch, bounds.now);
            let host_busy = self.by_destination.len(&self.scratch);
            let at_bound = if busy >= full_cap {
                true
            } else if share::counted(pace, busy, overdue) >= cap {
                look_at(next_look, next);
                true
            } else if !bounds.shares.destination_has_room(host_busy, at_host) {
                if at_host < bounds.shares.per_destination {
                    look_at(next_look, host_next);
                }
                true
            } else {
                false
            };
            if at_bound || !self.rate_allows(&webhook, front, bounds.now, next_look) {
                tenant.turn.push_back(webhook);
                continue;
            }
            let c = queue.pop_front()?;
            *queued -= 1;
            if queue.is_empty() {
                tenant.queues.remove(&webhook);
            } else {
                tenant.turn.push_back(webhook.clone());
            }
            let held = held_mut(&mut self.workspaces, workspace);
            held.queued -= 1;
            held.in_flight += 1;
            self.by_destination.start(&self.scratch, bounds.now);
            self.by_workspace.start(workspace, bounds.now);
            if busy == 0 {
                self.owners.insert(
                    webhook.clone(),
                    (workspace.to_owned(), self.scratch.clone()),
                );
            }
            self.by_webhook.start(&webhook, bounds.now);
            self.total_in_flight += 1;
            return Some(c);
        }
        None
    }

    /// Whether `webhook`'s rate limit lets an attempt start now; if so, its next slot moves on.
    fn rate_allows(
        &mut self,
        webhook: &str,
        front: &Leased,
        now: Instant,
        next_look: &mut Option<Instant>,
    ) -> bool {
        let Some(rate) = front.webhook.rate_limit_per_second else {
            return true;
        };
        let slot = self.next_slot.get(webhook).copied();
        if let Some(at) = slot.filter(|at| *at > now) {
            look_at(next_look, Some(at));
            return false;
        }
        let spacing = Duration::from_secs_f64(1.0 / f64::from(rate.max(1)));
        let from = slot.map_or(now, |at| at.max(now));
        self.next_slot.insert(webhook.to_owned(), from + spacing);
        true
    }
}

/// Deliveries of `webhook` (of `workspace`) queued in `lanes`.
fn queued_in(lanes: &[HashMap<String, Tenant>; 2], workspace: &str, webhook: &str) -> usize {
    lanes
        .iter()
        .filter_map(|lane| lane.get(workspace)?.queues.get(webhook))
        .map(VecDeque::len)
        .sum()
}

fn held_mut<'a>(workspaces: &'a mut HashMap<String, Held>, workspace: &str) -> &'a mut Held {
    if !workspaces.contains_key(workspace) {
        workspaces.insert(workspace.to_owned(), Held::default());
    }
    workspaces
        .get_mut(workspace)
        .expect("inserted just above if missing")
}

fn pace_after(paces: &mut HashMap<String, Pace>, key: &str, slow: bool) {
    let pace = paces.get(key).copied().unwrap_or_default().after(slow);
    if pace.is_clear() {
        paces.remove(key);
    } else {
        paces.insert(key.to_owned(), pace);
    }
}

/// Writes into `key` what the per-destination bound counts by: the workspace, and the host and port of a stored
/// (already validated and normalized) URL. Keyed by workspace, so that no tenant's webhooks
/// count against another's bound, whichever names they use.
fn destination_into(key: &mut String, workspace: &str, url: &str) {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or(rest);
    let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
    key.clear();
    key.push_str(workspace);
    key.push(' ');
    key.extend(authority.chars().map(|c| c.to_ascii_lowercase()));
}

#[cfg(test)]
fn destination_key(workspace: &str, url: &str) -> String {
    let mut key = String::new();
    destination_into(&mut key, workspace, url);
    key
}

/// Looks again at `at` at the latest.
fn look_at(next_look: &mut Option<Instant>, at: Option<Instant>) {
    if let Some(at) = at {
        *next_look = Some(next_look.map_or(at, |w| w.min(at)));
    }
}

#[cfg(test)]
mod tests;
