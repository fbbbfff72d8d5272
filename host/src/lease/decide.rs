//! The lease protocol's decisions, as pure functions of what a scan saw and
//! what this instance holds, so they can be tested without a table.
//!
//! - **Expiry by observation**: `Observations` notes, on this instance's
//!   monotonic clock, when it last saw each lease's counter change. A lease
//!   is expired when its counter has not moved for `failover` here; wall
//!   clocks are never compared.
//! - **Taking** (`plan`): leases that are unowned, expired, or owned by this
//!   instance's name but not held (an earlier life of it), whose shard is not
//!   finished and whose parents are finished; at most up to this instance's
//!   fair share (ceil(active leases / live instances)).
//! - **Balancing**: when nothing is to be taken, steal one lease by handoff,
//!   only from the instance holding the most, and only if it holds at least
//!   2 more than this one (so two instances never trade a lease back and
//!   forth), and only while every lease of that instance was seen moving (a
//!   steal from an instance that just died would restart the wait for its
//!   lease's expiry).
//! - **When to look again** (`look_again`): at the moment the first lease
//!   seen standing still would expire, if that comes before the next scan,
//!   so a dead instance's shards are taken about `failover` after this
//!   instance first saw their last counter, not up to a scan period later.
//! - **Handoff, new owner's side** (`pending_step`): wait for the old owner
//!   to clear `checkpointOwner`; take the lease over without it when the
//!   lease stopped moving for `failover` (the old owner died) or the handoff
//!   ran past its timeout.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

/// When this instance last saw each lease's counter change.
#[derive(Debug, Default)]
pub struct Observations {
    seen: HashMap<String, (u64, Instant)>,
}

impl Observations {
    /// Notes `counter` for `key` at `now`; returns for how long it has not moved.
    pub fn observe(&mut self, key: &str, counter: u64, now: Instant) -> Duration {
        match self.seen.get_mut(key) {
            Some((seen, since)) if *seen == counter => now.saturating_duration_since(*since),
            Some(entry) => {
                *entry = (counter, now);
                Duration::ZERO
            }
            None => {
                self.seen.insert(key.to_string(), (counter, now));
                Duration::ZERO
            }
        }
    }
}

/// One lease as a scan saw it, with what this instance knows about it.
#[derive(Debug, Clone)]
pub struct LeaseView {
    pub key: String,
    pub owner: Option<String>,
    pub checkpoint_owner: Option<String>,
    pub counter: u64,
    /// How long this instance has seen the counter unchanged.
    pub unchanged_for: Duration,
    /// Every pipeline read the shard to its end: nothing left to do.
    pub finished: bool,
    /// Every parent is finished (or no longer in the table).
    pub parents_done: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Take a lease that is free or expired (conditional on `counter`).
    Take { key: String, counter: u64 },
    /// Start a handoff of a live lease from `from` (conditional on `counter`).
    Steal {
        key: String,
        counter: u64,
        from: String,
    },
}

/// What to take or steal this cycle. `busy` is what this instance holds or
/// waits for (a handoff to it under way); `shuffle` orders the candidates
/// (randomly in production, so instances starting together spread).
pub fn plan(
    leases: &[LeaseView],
    me: &str,
    busy: &HashSet<String>,
    failover: Duration,
    shuffle: impl FnOnce(&mut Vec<&LeaseView>),
) -> Vec<Action> {
    let active: Vec<&LeaseView> = leases.iter().filter(|l| !l.finished).collect();
    let expired = |l: &LeaseView| l.unchanged_for >= failover;
    // Live instances: owners of an active lease that is not expired, and me.
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    counts.insert(me, 0);
    for lease in &active {
        if let Some(owner) = lease.owner.as_deref()
            && !expired(lease)
            && (owner != me || busy.contains(&lease.key))
        {
            *counts.entry(owner).or_default() += 1;
        }
    }
    let mine = active.iter().filter(|l| busy.contains(&l.key)).count();
    counts.insert(me, mine);
    let share = active.len().div_ceil(counts.len());
    let mut takeable: Vec<&LeaseView> = active
        .iter()
        .copied()
        .filter(|l| l.parents_done && !busy.contains(&l.key))
        .filter(|l| match l.owner.as_deref() {
            None => l.checkpoint_owner.is_none() || expired(l),
            Some(owner) if owner == me => true,
            Some(_) => expired(l),
        })
        .collect();
    if !takeable.is_empty() {
        shuffle(&mut takeable);
        return takeable
            .into_iter()
            .take(share.saturating_sub(mine))
            .map(|l| Action::Take {
                key: l.key.clone(),
                counter: l.counter,
            })
            .collect();
    }
    let Some((&richest, &most)) = counts
        .iter()
        .filter(|(owner, _)| **owner != me)
        .max_by_key(|(owner, count)| (**count, std::cmp::Reverse(**owner)))
    else {
        return Vec::new();
    };
    if most < mine + 2 {
        return Vec::new();
    }
    // A live owner renews every `renewal_interval`, so every scan sees its
    // counters move; one standing still means it may be dead or stalled.
    let stalling = |l: &&LeaseView| l.unchanged_for >= renewal_interval(failover);
    if active
        .iter()
        .filter(|l| l.owner.as_deref() == Some(richest))
        .any(stalling)
    {
        return Vec::new();
    }
    let mut candidates: Vec<&LeaseView> = active
        .iter()
        .copied()
        .filter(|l| {
            l.owner.as_deref() == Some(richest) && l.checkpoint_owner.is_none() && l.parents_done
        })
        .collect();
    shuffle(&mut candidates);
    candidates
        .first()
        .map(|l| Action::Steal {
            key: l.key.clone(),
            counter: l.counter,
            from: richest.to_string(),
        })
        .into_iter()
        .collect()
}

/// How long after a scan the next one is worth making for expiry: until the
/// first lease of another instance (or under a handoff) that was seen
/// standing still would expire; None if none stands still.
pub fn look_again(
    leases: &[LeaseView],
    busy: &HashSet<String>,
    failover: Duration,
) -> Option<Duration> {
    leases
        .iter()
        .filter(|l| !l.finished && l.parents_done && !busy.contains(&l.key))
        .filter(|l| l.owner.is_some() || l.checkpoint_owner.is_some())
        .filter(|l| !l.unchanged_for.is_zero() && l.unchanged_for < failover)
        .map(|l| failover - l.unchanged_for)
        .min()
}

/// A handoff to this instance, as its lease item now reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PendingStep {
    /// The old owner is still draining.
    Wait,
    /// The old owner wrote its final positions: start from them.
    Adopt,
    /// The old owner is gone or too slow: take the lease without it.
    TakeOver,
    /// Someone else owns the lease now.
    Abandon,
}

pub fn pending_step(
    owner: Option<&str>,
    checkpoint_owner: Option<&str>,
    me: &str,
    unchanged_for: Duration,
    waited: Duration,
    failover: Duration,
    handoff_timeout: Duration,
) -> PendingStep {
    if owner != Some(me) {
        return PendingStep::Abandon;
    }
    match checkpoint_owner {
        None => PendingStep::Adopt,
        Some(_) if unchanged_for >= failover || waited >= handoff_timeout => PendingStep::TakeOver,
        Some(_) => PendingStep::Wait,
    }
}

/// Why a renewal's condition failed, from the item as it reads now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RenewFailed {
    /// A taker started a handoff: this instance drains and writes the final
    /// positions, renewing as `checkpointOwner` meanwhile (at `counter`).
    Handoff { counter: u64 },
    /// This instance's own earlier renewal landed although its answer was
    /// lost (a timed-out attempt): the item is exactly one write past the
    /// counter it was conditional on, still owned by this instance and not
    /// in a handoff. Only this instance writes `leaseOwner = me` while it
    /// holds the lease, so the lease is still its own, at `counter`.
    Landed { counter: u64 },
    /// The lease is someone else's: stop at once.
    Lost,
}

/// A final write (`release`: true for letting the lease go, false for
/// finishing a handoff this instance drains) was refused, and the item now
/// reads `owner`, `checkpoint_owner`, `counter`: Some(counter) if a peer
/// stole the lease just before it (a handoff this instance had not seen
/// yet), so the handoff is to be finished at `counter` with the same final
/// positions (the peer then starts from them instead of waiting out
/// `failover` and reading again what was delivered since the last
/// renewal); None if the lease moved on otherwise.
pub fn finish_instead(
    owner: Option<&str>,
    checkpoint_owner: Option<&str>,
    counter: u64,
    held: u64,
    me: &str,
    release: bool,
) -> Option<u64> {
    match renew_failed(owner, checkpoint_owner, counter, held, me, false) {
        RenewFailed::Handoff { counter } if release => Some(counter),
        _ => None,
    }
}

/// `held` is the counter the refused renewal was conditional on; `owner`,
/// `checkpoint_owner` and `counter` are the item as it reads now.
pub fn renew_failed(
    owner: Option<&str>,
    checkpoint_owner: Option<&str>,
    counter: u64,
    held: u64,
    me: &str,
    draining: bool,
) -> RenewFailed {
    if checkpoint_owner == Some(me) && (draining || owner != Some(me)) {
        RenewFailed::Handoff { counter }
    } else if !draining
        && owner == Some(me)
        && checkpoint_owner.is_none()
        && counter == held.saturating_add(1)
    {
        RenewFailed::Landed { counter }
    } else {
        RenewFailed::Lost
    }
}

/// How often a held lease is renewed: every quarter of `failover`. (The
/// KCL and this design's first version renew every third.) A lease is valid
/// for `failover / 2` after its last successful renewal was sent, so a
/// renewal falls due with `failover / 4` of validity left: room for the
/// call, one given up unanswered after `failover / 12`, and two retries 100
/// ms apart, where a third leaves room for one retry at most. One more
/// small write per lease per `failover` buys that margin.
pub fn renewal_interval(failover: Duration) -> Duration {
    failover / 4
}

/// Which kind of call a lease is due for (the renewer's schedule).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallDue {
    /// A held lease's renewal.
    Renew,
    /// The final write of a held lease whose shard task ended.
    Settle,
    /// A look at a lease under handoff to this instance.
    Follow,
}

/// The renewer's schedule: of `leases` (key, due time, kind), those due at
/// `now` with no call in flight (`busy`), and the earliest due time among
/// the others without a call in flight (when to look again). A lease with a
/// call in flight is skipped: its next due time is set when the call ends.
pub fn next_calls<'a>(
    leases: impl Iterator<Item = (&'a str, Instant, CallDue)>,
    busy: &HashSet<&str>,
    now: Instant,
) -> (Vec<(&'a str, CallDue)>, Option<Instant>) {
    let mut due = Vec::new();
    let mut next: Option<Instant> = None;
    for (key, at, kind) in leases {
        if busy.contains(key) {
            continue;
        }
        if at <= now {
            due.push((key, kind));
        } else {
            next = Some(next.map_or(at, |n| n.min(at)));
        }
    }
    (due, next)
}

/// How often the new owner of a handoff reads the lease while the old
/// owner drains: often enough that the shard is not left unread for long
/// once the final positions are written (one strongly consistent read).
pub fn handoff_poll(failover: Duration) -> Duration {
    (failover / 24).clamp(Duration::from_millis(100), Duration::from_millis(500))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FAILOVER: Duration = Duration::from_secs(10);

    fn lease(key: &str, owner: Option<&str>) -> LeaseView {
        LeaseView {
            key: key.into(),
            owner: owner.map(Into::into),
            checkpoint_owner: None,
            counter: 1,
            unchanged_for: Duration::ZERO,
            finished: false,
            parents_done: true,
        }
    }

    fn keys(actions: &[Action]) -> Vec<&str> {
        actions
            .iter()
            .map(|a| match a {
                Action::Take { key, .. } | Action::Steal { key, .. } => key.as_str(),
            })
            .collect()
    }

    fn busy(keys: &[&str]) -> HashSet<String> {
        keys.iter().map(|k| k.to_string()).collect()
    }

    #[test]
    fn observation_measures_how_long_a_counter_stood_still() {
        let mut seen = Observations::default();
        let t0 = Instant::now();
        assert_eq!(seen.observe("a", 1, t0), Duration::ZERO);
        assert_eq!(seen.observe("a", 1, t0 + FAILOVER), FAILOVER);
        assert_eq!(seen.observe("a", 2, t0 + FAILOVER), Duration::ZERO);
        assert_eq!(seen.observe("a", 2, t0 + FAILOVER * 2), FAILOVER);
    }

    #[test]
    fn a_lone_instance_takes_every_free_lease() {
        let leases: Vec<_> = (0..4).map(|i| lease(&format!("s{i}"), None)).collect();
        let actions = plan(&leases, "me", &busy(&[]), FAILOVER, |_| {});
        assert_eq!(keys(&actions), ["s0", "s1", "s2", "s3"]);
    }

    #[test]
    fn takes_only_up_to_a_fair_share() {
        // 6 leases, one free ones; another instance holds 2: share is 3.
        let mut leases: Vec<_> = (0..4).map(|i| lease(&format!("s{i}"), None)).collect();
        leases.push(lease("o1", Some("other")));
        leases.push(lease("o2", Some("other")));
        let actions = plan(&leases, "me", &busy(&[]), FAILOVER, |_| {});
        assert_eq!(actions.len(), 3);
    }

    #[test]
    fn a_live_lease_is_not_taken_an_expired_one_is() {
        let mut dead = lease("d", Some("dead"));
        dead.unchanged_for = FAILOVER;
        let mut alive = lease("a", Some("alive"));
        alive.unchanged_for = FAILOVER - Duration::from_millis(1);
        let actions = plan(&[dead, alive], "me", &busy(&[]), FAILOVER, |_| {});
        assert_eq!(keys(&actions), ["d"]);
    }

    #[test]
    fn finished_shards_and_children_of_unfinished_parents_are_left() {
        let mut done = lease("done", None);
        done.finished = true;
        let mut child = lease("child", None);
        child.parents_done = false;
        let actions = plan(&[done, child], "me", &busy(&[]), FAILOVER, |_| {});
        assert!(actions.is_empty(), "{actions:?}");
    }

    #[test]
    fn a_lease_under_handoff_is_left_to_it_until_it_stalls() {
        let mut handing = lease("h", Some("taker"));
        handing.checkpoint_owner = Some("old".into());
        assert!(plan(&[handing.clone()], "me", &busy(&[]), FAILOVER, |_| {}).is_empty());
        handing.unchanged_for = FAILOVER;
        assert_eq!(
            keys(&plan(&[handing], "me", &busy(&[]), FAILOVER, |_| {})),
            ["h"]
        );
    }

    #[test]
    fn my_own_name_on_a_lease_i_do_not_hold_is_an_earlier_life() {
        let actions = plan(
            &[lease("x", Some("me"))],
            "me",
            &busy(&[]),
            FAILOVER,
            |_| {},
        );
        assert_eq!(keys(&actions), ["x"]);
    }

    #[test]
    fn balancing_steals_one_lease_from_an_instance_two_ahead() {
        let leases: Vec<_> = (0..5)
            .map(|i| lease(&format!("b{i}"), Some("big")))
            .chain((0..3).map(|i| lease(&format!("m{i}"), Some("me"))))
            .collect();
        let mine = busy(&["m0", "m1", "m2"]);
        let actions = plan(&leases, "me", &mine, FAILOVER, |_| {});
        assert_eq!(actions.len(), 1);
        assert!(matches!(&actions[0], Action::Steal { from, .. } if from == "big"));
        // 4 against 3: no steal (it would only move the imbalance).
        let leases: Vec<_> = (0..4)
            .map(|i| lease(&format!("b{i}"), Some("big")))
            .chain((0..3).map(|i| lease(&format!("m{i}"), Some("me"))))
            .collect();
        assert!(plan(&leases, "me", &mine, FAILOVER, |_| {}).is_empty());
    }

    #[test]
    fn sixteen_leases_over_three_instances_settle_within_one() {
        // Simulate scan cycles: each instance in turn plans on the shared view.
        let mut owners: Vec<Option<String>> = vec![None; 16];
        let names = ["a", "b", "c"];
        for _round in 0..40 {
            for me in names {
                let view: Vec<LeaseView> = owners
                    .iter()
                    .enumerate()
                    .map(|(i, o)| lease(&i.to_string(), o.as_deref()))
                    .collect();
                let mine: HashSet<String> = owners
                    .iter()
                    .enumerate()
                    .filter(|(_, o)| o.as_deref() == Some(me))
                    .map(|(i, _)| i.to_string())
                    .collect();
                for action in plan(&view, me, &mine, FAILOVER, |_| {}) {
                    let key = match action {
                        Action::Take { key, .. } | Action::Steal { key, .. } => key,
                    };
                    owners[key.parse::<usize>().unwrap()] = Some(me.to_string());
                }
            }
        }
        let counts: Vec<usize> = names
            .iter()
            .map(|n| owners.iter().filter(|o| o.as_deref() == Some(*n)).count())
            .collect();
        assert_eq!(counts.iter().sum::<usize>(), 16);
        assert!(
            counts.iter().max().unwrap() - counts.iter().min().unwrap() <= 1,
            "{counts:?}"
        );
    }

    #[test]
    fn the_new_owner_waits_adopts_or_takes_over() {
        let step = |owner, cp, unchanged, waited| {
            pending_step(
                owner,
                cp,
                "me",
                unchanged,
                waited,
                FAILOVER,
                Duration::from_secs(30),
            )
        };
        let z = Duration::ZERO;
        assert_eq!(step(Some("me"), Some("old"), z, z), PendingStep::Wait);
        assert_eq!(step(Some("me"), None, z, z), PendingStep::Adopt);
        assert_eq!(
            step(Some("me"), Some("old"), FAILOVER, z),
            PendingStep::TakeOver
        );
        assert_eq!(
            step(Some("me"), Some("old"), z, Duration::from_secs(30)),
            PendingStep::TakeOver
        );
        assert_eq!(step(Some("x"), None, z, z), PendingStep::Abandon);
    }

    #[test]
    fn a_failed_renewal_is_a_handoff_only_when_this_instance_drains_it() {
        assert_eq!(
            renew_failed(Some("taker"), Some("me"), 9, 8, "me", false),
            RenewFailed::Handoff { counter: 9 }
        );
        assert_eq!(
            renew_failed(Some("x"), None, 9, 8, "me", false),
            RenewFailed::Lost
        );
        assert_eq!(
            renew_failed(None, None, 9, 8, "me", true),
            RenewFailed::Lost
        );
    }

    #[test]
    fn a_renewal_whose_answer_was_lost_keeps_the_lease_only_if_it_was_the_one_write_since() {
        // Our own write landed: one past the counter it was conditional on.
        assert_eq!(
            renew_failed(Some("me"), None, 9, 8, "me", false),
            RenewFailed::Landed { counter: 9 }
        );
        // More than one write since: someone else wrote in between.
        assert_eq!(
            renew_failed(Some("me"), None, 10, 8, "me", false),
            RenewFailed::Lost
        );
        // Released, taken by another, or in a handoff to another instance.
        assert_eq!(
            renew_failed(None, None, 9, 8, "me", false),
            RenewFailed::Lost
        );
        assert_eq!(
            renew_failed(Some("x"), None, 9, 8, "me", false),
            RenewFailed::Lost
        );
        assert_eq!(
            renew_failed(Some("me"), Some("x"), 9, 8, "me", false),
            RenewFailed::Lost
        );
    }

    #[test]
    fn each_lease_is_called_when_due_and_never_twice_at_once() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let leases = [
            ("late", at(0), CallDue::Renew),
            ("busy", at(0), CallDue::Renew),
            ("ended", at(0), CallDue::Settle),
            ("soon", at(300), CallDue::Renew),
            ("handoff", at(100), CallDue::Follow),
        ];
        let busy: HashSet<&str> = ["busy"].into_iter().collect();
        let (due, next) = next_calls(leases.iter().copied(), &busy, at(50));
        assert_eq!(
            due,
            [("late", CallDue::Renew), ("ended", CallDue::Settle)],
            "what is due, without the lease whose call is in flight"
        );
        assert_eq!(next, Some(at(100)), "then wake for the earliest other");
        // A call in flight for the only lease left: nothing to wake for.
        let busy: HashSet<&str> = ["soon"].into_iter().collect();
        let (due, next) = next_calls([leases[3]].into_iter(), &busy, at(400));
        assert!(due.is_empty());
        assert_eq!(next, None);
    }

    #[test]
    fn a_handoff_is_polled_often_but_not_hammered() {
        let default = handoff_poll(Duration::from_secs(10));
        assert!(default > Duration::from_millis(400) && default < Duration::from_millis(420));
        assert_eq!(
            handoff_poll(Duration::from_secs(60)),
            Duration::from_millis(500)
        );
        assert_eq!(
            handoff_poll(Duration::from_secs(1)),
            Duration::from_millis(100)
        );
    }

    #[test]
    fn a_lease_standing_still_is_looked_at_again_when_it_would_expire() {
        let mut still = lease("still", Some("other"));
        still.unchanged_for = Duration::from_secs(4);
        let mut stiller = lease("stiller", Some("other"));
        stiller.unchanged_for = Duration::from_secs(7);
        let moving = lease("moving", Some("other"));
        let mut mine = lease("mine", Some("me"));
        mine.unchanged_for = Duration::from_secs(9);
        let mut done = lease("done", Some("other"));
        done.unchanged_for = Duration::from_secs(9);
        done.finished = true;
        let leases = [still, stiller, moving, mine, done];
        assert_eq!(
            look_again(&leases, &busy(&["mine"]), FAILOVER),
            Some(Duration::from_secs(3)),
            "the one seen still for 7 s of 10, not mine nor a finished one"
        );
        assert_eq!(look_again(&leases[2..3], &busy(&[]), FAILOVER), None);
    }

    #[test]
    fn nothing_is_stolen_from_an_instance_whose_leases_stand_still() {
        let mut leases: Vec<_> = (0..5)
            .map(|i| lease(&format!("b{i}"), Some("big")))
            .collect();
        leases[3].unchanged_for = renewal_interval(FAILOVER);
        let actions = plan(&leases, "me", &busy(&[]), FAILOVER, |_| {});
        assert!(actions.is_empty(), "big may have just died: {actions:?}");
    }

    #[test]
    fn a_release_refused_by_a_steal_finishes_the_handoff_instead() {
        // A peer stole the lease (owner: it, checkpointOwner: me) just before.
        assert_eq!(
            finish_instead(Some("peer"), Some("me"), 9, 8, "me", true),
            Some(9)
        );
        // Taken outright by a peer, or released: nothing to finish.
        assert_eq!(finish_instead(Some("peer"), None, 9, 8, "me", true), None);
        assert_eq!(finish_instead(None, None, 9, 8, "me", true), None);
        // A handoff's own final write refused: the new owner took it over.
        assert_eq!(
            finish_instead(Some("peer"), Some("me"), 9, 8, "me", false),
            None
        );
    }
}
