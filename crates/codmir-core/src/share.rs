//! How a node's delivery slots are shared: among the workspaces that have work, then among a
//! workspace's endpoints and destinations, and less to whoever's attempts hang.
//!
//! The engine asks this policy, for each queued delivery in turn (least-served workspace
//! first), whether it may start; the policy itself is plain data and arithmetic.
//!
//! - A workspace gets an equal share of the slots left after a **reserve**, divided among
//!   the workspaces that have work queued or in flight. Once another has work, every share
//!   shrinks, and a workspace over its new share starts nothing until it is under again.
//! - The reserve is for workspaces that hold (almost) nothing: one may take a slot of it only
//!   while it has fewer than an eighth of the reserve in flight. So however many workspaces
//!   hold their shares — or more, having held them before the others came — a workspace that
//!   starts having work starts at once, and the first workspaces to arrive cannot take the
//!   reserve from the next ones.
//! - **Pace**: an attempt that takes a third of the request timeout or longer is slow. An
//!   endpoint, or a workspace, most of whose recent attempts were slow is *hanging*: an
//!   endpoint then gets one attempt at a time, a workspace a quarter of its share. So hung
//!   endpoints hold fewer slots, not more, and fast ones recover their share within a few
//!   attempts.
//! - A workspace's attempts to one destination (host and port) are bounded, per workspace:
//!   another tenant's webhooks on the same host, hanging or not, do not count against it.
//!   An attempt in flight for [`OVERDUE_AFTER`] is *overdue* and stops counting against that
//!   bound, up to as many overdue as the bound again: so when some of a host's requests hang
//!   until the timeout, they do not take the slots its quick answers need (a host gets at
//!   most twice its bound in flight, the second half only for attempts that are overdue).

/// How long an attempt is in flight before it is overdue: it makes room under its
/// destination's bound (`Shares::destination_has_room`). A receiver is expected to answer
/// within a second (the contract asks for a quick 2xx and the work after it).
pub const OVERDUE_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

/// The bounds a node's slots are shared under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shares {
    /// Most attempts in flight on the node.
    pub total: usize,
    /// An operator's ceiling on one workspace's share, if set.
    pub per_workspace: Option<usize>,
    /// Most attempts in flight to one webhook.
    pub per_endpoint: usize,
    /// Most attempts in flight from one workspace to one destination (host and port).
    pub per_destination: usize,
}

impl Shares {
    /// Slots no workspace's share includes: free for a workspace that starts having work
    /// while the others hold their shares.
    pub fn reserve(&self) -> usize {
        self.total / 8
    }

    /// The most attempts one workspace may have in flight while `active` workspaces
    /// (itself included) have work.
    pub fn workspace_cap(&self, active: usize, pace: Pace) -> usize {
        let fair = ((self.total - self.reserve()) / active.max(1)).max(1);
        let fair = if pace.hanging() {
            (fair / 4).max(1)
        } else {
            fair
        };
        self.per_workspace.map_or(fair, |ceiling| ceiling.min(fair))
    }

    /// How many attempts a workspace may have in flight and still take a slot of the reserve.
    pub fn newcomer(&self) -> usize {
        (self.reserve() / 8).max(1)
    }

    /// Whether a workspace holding `held` attempts, under a cap of `cap`, may start one more
    /// while the node holds `in_flight` in all.
    pub fn may_start(&self, held: usize, cap: usize, in_flight: usize) -> bool {
        let shared = self.total - self.reserve();
        held < cap && (in_flight < shared || (held < self.newcomer() && in_flight < self.total))
    }

    /// Whether a workspace's destination with `in_flight` attempts, `overdue` of them in flight
    /// for [`OVERDUE_AFTER`] or longer, may take one more: overdue attempts do not count,
    /// up to as many as the bound.
    pub fn destination_has_room(&self, in_flight: usize, overdue: usize) -> bool {
        in_flight - overdue.min(self.per_destination).min(in_flight) < self.per_destination
    }

    /// The most attempts one webhook may have in flight: its own `max_in_flight` if lower
    /// than the node's, and one while it hangs.
    pub fn endpoint_cap(&self, own: Option<u32>, pace: Pace) -> usize {
        if pace.hanging() {
            return 1;
        }
        own.map_or(self.per_endpoint, |m| (m as usize).min(self.per_endpoint))
    }
}

/// What counts against the cap of an endpoint or a workspace at `pace` with `in_flight`
/// attempts, `overdue` of them in flight for [`OVERDUE_AFTER`]: all of them, or, while it
/// hangs, only those not overdue yet. So a hanging endpoint (one at a time) or workspace (a
/// quarter share) still starts an attempt each time the last ones turn overdue, and hears
/// that it answers again; its cap while not hanging bounds it all the same.
pub fn counted(pace: Pace, in_flight: usize, overdue: usize) -> usize {
    match pace.hanging() {
        true => in_flight - overdue.min(in_flight),
        false => in_flight,
    }
}

/// How recent attempts went: the share of slow ones, in percent, as a moving average that
/// weighs the latest attempt a quarter.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pace(u8);

impl Pace {
    /// From this share of slow attempts, hanging.
    const HANGING: u8 = 50;

    /// The pace after one more attempt.
    #[must_use]
    pub fn after(self, slow: bool) -> Self {
        let kept = u16::from(self.0) * 3 / 4;
        Self((kept + if slow { 25 } else { 0 }) as u8)
    }

    /// Whether most recent attempts were slow.
    pub fn hanging(self) -> bool {
        self.0 >= Self::HANGING
    }

    /// Whether nothing slow is remembered: a pace worth keeping no longer.
    pub fn is_clear(self) -> bool {
        self.0 == 0
    }
}

/// Whether an attempt that took `took` of a `timeout` counts as slow: a third of the
/// request timeout or more (5 s of the default 15 s).
pub fn is_slow(took: std::time::Duration, timeout: std::time::Duration) -> bool {
    took >= timeout / 3
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const NODE: Shares = Shares {
        total: 512,
        per_workspace: None,
        per_endpoint: 64,
        per_destination: 128,
    };

    #[test]
    fn overdue_attempts_make_room_under_a_destination_bound_up_to_the_bound_again() {
        // (in flight, overdue among them, room for one more) under a bound of 128
        let table = [
            (0, 0, true),
            (127, 0, true),
            (128, 0, false),
            (128, 1, true),
            (200, 72, false),
            (200, 73, true),
            (255, 128, true),
            (256, 128, false),
            (300, 300, false),
        ];
        for (in_flight, overdue, room) in table {
            assert_eq!(
                NODE.destination_has_room(in_flight, overdue),
                room,
                "{in_flight} in flight, {overdue} overdue"
            );
        }
    }

    fn hanging() -> Pace {
        (0..3).fold(Pace::default(), |p, _| p.after(true))
    }

    #[test]
    fn shares_shrink_with_the_workspaces_that_have_work_and_keep_a_reserve() {
        // (active workspaces, the workspace's pace, its cap, slots left free when every
        // active workspace holds its cap)
        let table = [
            (1, Pace::default(), 448, 64),
            (2, Pace::default(), 224, 64),
            (3, Pace::default(), 149, 65),
            (6, Pace::default(), 74, 68),
            (100, Pace::default(), 4, 112),
            (1000, Pace::default(), 1, 0),
            (1, hanging(), 112, 400),
            (3, hanging(), 37, 401),
        ];
        for (active, pace, cap, free) in table {
            assert_eq!(NODE.workspace_cap(active, pace), cap, "{active} {pace:?}");
            assert_eq!(
                NODE.total.saturating_sub(active * cap),
                free,
                "{active} {pace:?}"
            );
        }
        let ceiling = Shares {
            per_workspace: Some(100),
            ..NODE
        };
        assert_eq!(ceiling.workspace_cap(1, Pace::default()), 100);
        assert_eq!(ceiling.workspace_cap(6, Pace::default()), 74);
        let tiny = Shares { total: 1, ..NODE };
        assert_eq!((tiny.reserve(), tiny.workspace_cap(1, hanging())), (0, 1));
    }

    #[test]
    fn the_reserve_is_for_workspaces_that_hold_almost_nothing() {
        // (held by the workspace, its cap, held on the node, may it start one more)
        let table = [
            (0, 448, 0, true),
            (447, 448, 447, true),
            (448, 448, 448, false), // its cap
            (100, 224, 447, true),
            (100, 224, 448, false), // the shared slots are full: the reserve is not its
            (7, 74, 448, true),     // fewer than 8 (64 / 8): a newcomer
            (8, 74, 448, false),
            (0, 1, 511, true),
            (0, 1, 512, false), // the node is full
        ];
        for (held, cap, in_flight, may) in table {
            assert_eq!(
                NODE.may_start(held, cap, in_flight),
                may,
                "{held} of {cap}, {in_flight} on the node"
            );
        }
        let small = Shares { total: 64, ..NODE };
        assert_eq!((small.reserve(), small.newcomer()), (8, 1));
        assert!(small.may_start(0, 28, 63) && !small.may_start(1, 28, 57));
    }

    #[test]
    fn a_hanging_endpoint_gets_one_attempt_at_a_time_until_it_answers_fast() {
        let table = [
            (None, Pace::default(), 64),
            (Some(8), Pace::default(), 8),
            (Some(200), Pace::default(), 64),
            (None, hanging(), 1),
            (Some(8), hanging(), 1),
        ];
        for (own, pace, cap) in table {
            assert_eq!(NODE.endpoint_cap(own, pace), cap, "{own:?} {pace:?}");
        }
        // Slow attempts in a row: 25, 43, 57 — hanging from the third.
        let mut pace = Pace::default();
        let mut hung = Vec::new();
        for _ in 0..4 {
            pace = pace.after(true);
            hung.push(pace.hanging());
        }
        assert_eq!(hung, [false, false, true, true]);
        // Then fast ones: 50, 37 — recovered from the second.
        let recovered: Vec<bool> = (0..2)
            .map(|_| {
                pace = pace.after(false);
                pace.hanging()
            })
            .collect();
        assert_eq!(recovered, [true, false]);
        // One slow attempt in four never makes an endpoint hang.
        let mixed = (0..40).fold(Pace::default(), |p, i| p.after(i % 4 == 0));
        assert!(!mixed.hanging(), "{mixed:?}");
        let cleared = (0..20).fold(hanging(), |p, _| p.after(false));
        assert!(cleared.is_clear());
    }

    #[test]
    fn an_attempt_is_slow_from_a_third_of_the_timeout() {
        let t = Duration::from_secs(15);
        for (took, slow) in [(4_999, false), (5_000, true), (15_000, true), (20, false)] {
            assert_eq!(is_slow(Duration::from_millis(took), t), slow, "{took} ms");
        }
    }
}
