//! Per-shard write pacing, as the KPL does it: an output's writer sends an
//! entry only when the shard it lands in (`shard_map.rs`) has room under the
//! shard's write quota (1,000 records/s and 1 MiB/s), so that a shard is not
//! sent what Kinesis would refuse (a throttled entry is a request's worth of
//! signing, sending and retrying for nothing).
//!
//! Several writers share a shard (other pipelines' processes, other
//! instances, other producers), and none knows the others' rates, so each
//! one's share of a shard adapts, additive increase and multiplicative
//! decrease: it is halved (`DECREASE`) when Kinesis throttles an entry for
//! that shard (once per `CUT_SPACING`, so one request's many throttled
//! entries count once), grows by `INCREASE_PER_SECOND` of the quota each
//! second while throttles are recent, and by `CALM_INCREASE_PER_SECOND` once
//! none was seen for `CALM` (the shard has room: a writer went quiet, or
//! demand moved to this one, as at the tail of a backlog). Alone, a writer
//! converges to the full quota; N writers to about 1/N each, with the shard
//! kept near its ceiling. A share's tokens fill for `BURST` at most, so a
//! writer that was idle sends at most that much at once.
//!
//! A shard whose tokens ran out admits again only once `LINGER`'s worth at
//! its share has come back (the KPL's `RecordMaxBufferedTime` does the same
//! job): without it, a writer at the quota sends a request each time one
//! token returns, a millisecond apart, each carrying a few records, and a
//! paced backlog costs four times the CPU per record of an unpaced one
//! (`scripts/bench cpu`, README *CPU*). The rate is unchanged (tokens keep
//! coming in while the shard waits); a record waits at most `LINGER` more,
//! and only while its shard is at its quota.
//!
//! The constants come from simulating writers that each offer more than a
//! shard takes, with a 25 ms feedback delay (`writers_sharing_a_shard_...`
//! below is that simulation, shortened), and from `scripts/bench quota` (README,
//! *Quotas*): a gentler cut (0.8) throttled more and filled the shard no
//! better; without the calm increase, the last writers of a backlog took
//! 10-15 s to regain the shard. In the simulation's worst case (9 writers
//! each always offering ten times the shard, arriving in turn) 1.3% of
//! entries are throttled; end to end, with 3 instances × 3
//! pipelines writing 2-shard outputs, 0.2%.
//!
//! Pure (time is passed in): the writer (`writer.rs`) asks `admit` for each
//! entry it packs and reports throttled entries with `throttled`.
//!
//! Upstream: <https://docs.aws.amazon.com/streams/latest/dev/service-sizes-and-limits.html>;
//! the KPL's `RateLimit` per shard (`aws/kinesis/core/limiter.h`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A shard's write quota.
pub const RECORDS_PER_SECOND: f64 = 1000.0;
pub const BYTES_PER_SECOND: f64 = 1_048_576.0;
/// Tokens a share accumulates at most: this long at its rate.
const BURST: Duration = Duration::from_millis(500);
/// A shard at its quota admits again once this long's worth of its share is
/// back, so that requests stay full (module doc).
const LINGER: Duration = Duration::from_millis(50);
/// A throttled entry multiplies the shard's share by this.
const DECREASE: f64 = 0.5;
/// The share grows by this fraction of the quota per second...
const INCREASE_PER_SECOND: f64 = 0.02;
/// ... and by this much once no throttle was seen for `CALM` (the shard has
/// room: another writer went quiet, or this one's demand moved here).
const CALM_INCREASE_PER_SECOND: f64 = 0.10;
const CALM: Duration = Duration::from_secs(1);
/// Throttles closer together than this cut the share once.
const CUT_SPACING: Duration = Duration::from_millis(100);
/// The least share of a shard a writer keeps: a tenth, so that throttles
/// that do not come from this writer's rate (a shard other producers fill,
/// or a proxy failing a fraction of every request) leave it 100 records/s
/// instead of starving it; ten writers at the floor still fit a shard.
const FLOOR: f64 = 0.1;

#[derive(Debug)]
struct Bucket {
    /// This writer's share of the quota, in (FLOOR, 1].
    share: f64,
    records: f64,
    bytes: f64,
    at: Instant,
    last_cut: Option<Instant>,
    /// The tokens ran out: nothing is admitted until `LINGER`'s worth is back.
    refilling: bool,
}

impl Bucket {
    fn new(now: Instant) -> Bucket {
        Bucket {
            share: 1.0,
            records: RECORDS_PER_SECOND * BURST.as_secs_f64(),
            bytes: BYTES_PER_SECOND * BURST.as_secs_f64(),
            at: now,
            last_cut: None,
            refilling: false,
        }
    }

    /// What a shard that ran out waits for: `LINGER` at its share (at least
    /// one entry; bytes may still be in debt by one entry).
    fn quantum(&self) -> (f64, f64) {
        let secs = LINGER.as_secs_f64() * self.share;
        (
            (RECORDS_PER_SECOND * secs).max(1.0),
            BYTES_PER_SECOND * secs,
        )
    }

    fn has_room(&mut self) -> bool {
        if self.refilling {
            let (records, bytes) = self.quantum();
            self.refilling = self.records < records || self.bytes < bytes;
        }
        !self.refilling && self.records >= 1.0 && self.bytes >= 0.0
    }

    fn refill(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        self.at = self.at.max(now);
        let calm = self
            .last_cut
            .is_none_or(|cut| now.saturating_duration_since(cut) >= CALM);
        let increase = match calm {
            true => CALM_INCREASE_PER_SECOND,
            false => INCREASE_PER_SECOND,
        };
        self.share = (self.share + increase * dt).min(1.0);
        let burst = BURST.as_secs_f64() * self.share;
        self.records =
            (self.records + RECORDS_PER_SECOND * self.share * dt).min(RECORDS_PER_SECOND * burst);
        self.bytes =
            (self.bytes + BYTES_PER_SECOND * self.share * dt).min(BYTES_PER_SECOND * burst);
    }

    /// How long until entries are admitted again (a `quantum` is back).
    fn wait(&self) -> Duration {
        let (records, bytes) = self.quantum();
        let records = (records - self.records).max(0.0) / (RECORDS_PER_SECOND * self.share);
        let bytes = (bytes - self.bytes).max(0.0) / (BYTES_PER_SECOND * self.share);
        Duration::from_secs_f64(records.max(bytes))
    }
}

/// The pacing state of one output: a bucket per shard written to. Shards
/// are also known by a small number (their *tag*, `tag`), which the
/// writer's queue keeps beside each ready record, so that packing a request
/// asks about a shard by index, not by its name.
#[derive(Debug, Default)]
pub struct Pacer {
    tags: HashMap<Arc<str>, u32>,
    /// Per tag: the shard's name and its bucket (none until written to, or
    /// since the shard left the map).
    buckets: Vec<(Arc<str>, Option<Bucket>)>,
}

/// The tag of records that are not paced (no shard map).
pub const UNPACED: u32 = u32::MAX;

impl Pacer {
    /// The tag of `shard` (given once, kept while the output lives: shard ids
    /// are never reused).
    pub fn tag(&mut self, shard: &Arc<str>) -> u32 {
        if let Some(&tag) = self.tags.get(&**shard) {
            return tag;
        }
        let tag = self.buckets.len() as u32;
        self.buckets.push((shard.clone(), None));
        self.tags.insert(shard.clone(), tag);
        tag
    }

    /// Takes room for one entry of `bytes` in `shard`, or says how long until
    /// there is some. (Bytes may go into debt by one entry, so an entry
    /// larger than the burst still goes.)
    pub fn admit(&mut self, shard: &Arc<str>, bytes: usize, now: Instant) -> Result<(), Duration> {
        let tag = self.tag(shard);
        self.admit_tag(tag, bytes, now)
    }

    /// `admit` for the shard of `tag` (an unknown tag is not paced).
    pub fn admit_tag(&mut self, tag: u32, bytes: usize, now: Instant) -> Result<(), Duration> {
        let Some((_, bucket)) = self.buckets.get_mut(tag as usize) else {
            return Ok(());
        };
        let bucket = bucket.get_or_insert_with(|| Bucket::new(now));
        bucket.refill(now);
        if bucket.has_room() {
            bucket.records -= 1.0;
            bucket.bytes -= bytes as f64;
            Ok(())
        } else {
            bucket.refilling = true;
            Err(bucket.wait().max(Duration::from_millis(1)))
        }
    }

    fn bucket_mut(&mut self, shard: &str) -> Option<&mut Bucket> {
        let tag = *self.tags.get(shard)?;
        self.buckets.get_mut(tag as usize)?.1.as_mut()
    }

    /// Kinesis throttled an entry for `shard`: its share shrinks (see the
    /// module doc) and what was saved up is spent.
    pub fn throttled(&mut self, shard: &str, now: Instant) {
        let Some(bucket) = self.bucket_mut(shard) else {
            return;
        };
        bucket.refill(now);
        bucket.records = bucket.records.min(0.0);
        bucket.bytes = bucket.bytes.min(0.0);
        bucket.refilling = true;
        if bucket
            .last_cut
            .is_some_and(|at| now.saturating_duration_since(at) < CUT_SPACING)
        {
            return;
        }
        bucket.last_cut = Some(now);
        bucket.share = (bucket.share * DECREASE).max(FLOOR);
    }

    /// This writer's share of `shard`'s quota now (1 when never written).
    pub fn share(&self, shard: &str) -> f64 {
        self.tags
            .get(shard)
            .and_then(|&tag| self.buckets.get(tag as usize)?.1.as_ref())
            .map_or(1.0, |b| b.share)
    }

    /// Forgets the buckets of the shards not in `keep` (the stream was
    /// resharded); their tags stay theirs.
    pub fn retain(&mut self, keep: impl Fn(&str) -> bool) {
        for (shard, bucket) in &mut self.buckets {
            if !keep(shard) {
                *bucket = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admitted_in(
        pacer: &mut Pacer,
        shard: &Arc<str>,
        bytes: usize,
        from: Instant,
        secs: u64,
    ) -> usize {
        // Offers an entry every 100 µs for `secs` seconds.
        let steps = secs * 10_000;
        (0..steps)
            .filter(|i| {
                let now = from + Duration::from_micros(i * 100);
                pacer.admit(shard, bytes, now).is_ok()
            })
            .count()
    }

    #[test]
    fn a_lone_writer_gets_the_quota_and_no_more() {
        let mut pacer = Pacer::default();
        let shard: Arc<str> = "shardId-0".into();
        let t0 = Instant::now();
        let n = admitted_in(&mut pacer, &shard, 100, t0, 10);
        // 10 s at 1,000/s plus the first burst (500).
        assert!((10_000..=10_500).contains(&n), "{n}");
        let other: Arc<str> = "shardId-1".into();
        assert!(
            pacer
                .admit(&other, 100, t0 + Duration::from_secs(10))
                .is_ok(),
            "shards are paced apart"
        );
    }

    #[test]
    fn bytes_are_paced_too() {
        let mut pacer = Pacer::default();
        let shard: Arc<str> = "s".into();
        let t0 = Instant::now();
        let n = admitted_in(&mut pacer, &shard, 10_240, t0, 10);
        // 1 MiB/s of 10 KiB entries: ~102/s, plus a burst of ~51 and one in debt.
        assert!((1_000..=1_100).contains(&n), "{n}");
    }

    #[test]
    fn a_throttle_cuts_the_share_once_per_spacing_and_it_grows_back() {
        let mut pacer = Pacer::default();
        let shard: Arc<str> = "s".into();
        let t0 = Instant::now();
        assert!(pacer.admit(&shard, 1, t0).is_ok());
        for i in 0..10 {
            pacer.throttled(&shard, t0 + Duration::from_millis(i));
        }
        let share = pacer.share(&shard);
        assert!(
            (DECREASE..DECREASE + 0.001).contains(&share),
            "one cut for a burst of throttles: {share}"
        );
        assert!(
            pacer
                .admit(&shard, 1, t0 + Duration::from_millis(9))
                .is_err(),
            "saved tokens are spent"
        );
        pacer.throttled(&shard, t0 + CUT_SPACING + Duration::from_millis(1));
        assert!(pacer.share(&shard) < DECREASE);
        // No throttles for 60 s: back to the whole quota.
        let _ = pacer.admit(&shard, 1, t0 + Duration::from_secs(60));
        assert_eq!(pacer.share(&shard), 1.0);
    }

    #[test]
    fn a_shard_that_ran_out_admits_a_lingers_worth_at_once_after_the_wait() {
        let mut pacer = Pacer::default();
        let shard: Arc<str> = "s".into();
        let t0 = Instant::now();
        while pacer.admit(&shard, 1, t0).is_ok() {}
        let wait = pacer.admit(&shard, 1, t0).unwrap_err();
        assert!(
            (LINGER - Duration::from_millis(1)..=LINGER + Duration::from_millis(1)).contains(&wait),
            "{wait:?}"
        );
        // A token back is not enough: no request of one entry.
        let one = Duration::from_secs_f64(1.5 / RECORDS_PER_SECOND);
        assert!(pacer.admit(&shard, 1, t0 + one).is_err());
        let mut admitted = 0;
        while pacer.admit(&shard, 1, t0 + wait).is_ok() {
            admitted += 1;
        }
        let quantum = (RECORDS_PER_SECOND * LINGER.as_secs_f64()) as usize;
        assert!((quantum..=quantum + 1).contains(&admitted), "{admitted}");
    }

    #[test]
    fn below_its_quota_a_shard_admits_every_entry_at_once() {
        // 500 records/s, one every 2 ms: never held back, so never batched.
        let mut pacer = Pacer::default();
        let shard: Arc<str> = "s".into();
        let t0 = Instant::now();
        for i in 0..10_000u64 {
            let now = t0 + Duration::from_millis(2 * i);
            assert!(pacer.admit(&shard, 1024, now).is_ok(), "entry {i}");
        }
    }

    #[test]
    fn writers_sharing_a_shard_converge_near_its_ceiling() {
        // Nine writers offering all they can to one shard that admits its
        // quota (a 1 s bucket) and throttles the rest, as Kinesis does.
        let shard: Arc<str> = "s".into();
        let mut writers: Vec<Pacer> = (0..9).map(|_| Pacer::default()).collect();
        let t0 = Instant::now();
        let mut kinesis_tokens = RECORDS_PER_SECOND;
        let (mut written, mut throttled) = (0u64, 0u64);
        let step = Duration::from_millis(1);
        for ms in 0..30_000u64 {
            let now = t0 + step * ms as u32;
            kinesis_tokens = (kinesis_tokens + RECORDS_PER_SECOND / 1000.0).min(RECORDS_PER_SECOND);
            // Requests arrive in a different order each millisecond (a fixed
            // order would let the first writer take every token, always).
            let first = (ms as usize * 7) % writers.len();
            let (later, earlier) = writers.split_at_mut(first);
            for w in earlier.iter_mut().chain(later.iter_mut()) {
                // Each writer offers up to 10 entries per millisecond.
                for _ in 0..10 {
                    if w.admit(&shard, 1024, now).is_err() {
                        break;
                    }
                    if kinesis_tokens >= 1.0 {
                        kinesis_tokens -= 1.0;
                        if ms >= 10_000 {
                            written += 1;
                        }
                    } else {
                        w.throttled(&shard, now);
                        if ms >= 10_000 {
                            throttled += 1;
                        }
                    }
                }
            }
        }
        let rate = written as f64 / 20.0;
        assert!(rate >= 0.95 * RECORDS_PER_SECOND, "{rate} rec/s");
        let wasted = throttled as f64 / (written + throttled) as f64;
        println!("9 writers: {rate} rec/s, {:.1}% throttled", wasted * 100.0);
        // The worst case: every writer offers ten times the shard, always.
        assert!(wasted < 0.10, "{:.1}% throttled", wasted * 100.0);
    }
    #[test]
    fn throttles_at_any_rate_leave_a_writer_its_floor() {
        // Throttles that do not depend on the rate (a fault proxy failing 30%
        // of every request's entries, or a shard other producers fill): the
        // share falls to the floor and stays there, and the floor still
        // moves a backlog (the ordering tests' 3,000 records in well under a
        // minute with 30% of entries refused).
        let mut pacer = Pacer::default();
        let shard: Arc<str> = "s".into();
        let t0 = Instant::now();
        let mut admitted = 0u64;
        for ms in 0..60_000u64 {
            let now = t0 + Duration::from_millis(ms);
            while pacer.admit(&shard, 100, now).is_ok() {
                admitted += 1;
            }
            if ms % 250 == 0 {
                pacer.throttled(&shard, now);
            }
        }
        let rate = admitted as f64 / 60.0;
        assert!(rate >= FLOOR * RECORDS_PER_SECOND, "{rate} rec/s");
        assert!(rate >= 100.0, "{rate} rec/s: the floor starves a writer");
    }
}
