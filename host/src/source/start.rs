//! Where a shard starts: for each pipeline on a source shard, where it must
//! begin reading (or whether it must wait for a parent, or is done), and
//! where the shard's shared reader begins so that it serves as many of them
//! as it can. Pure functions of the stored state, so a restart decides
//! exactly what the run before it would have.
//!
//! Inputs, all from the checkpoint store and ListShards:
//! - the pipeline's own position in the shard (acknowledged sequence number,
//!   possibly inside a KPL aggregate; finished; or the legacy per-shard
//!   `latest_since_ms` of older state files);
//! - the pipeline's state in each parent shard, and whether the parent is
//!   still listed (a parent past retention is no longer listed);
//! - the source's `start_position`, resolved to a [`SourceStart`]: trim horizon, or a
//!   moment. `latest` is the moment the pipeline first started on the source,
//!   stored before anything was read, so "latest" means "what arrived after
//!   the pipeline started", whatever restarts or reshards happen later.
//!
//! Rules for one pipeline on one shard ([`pipeline_start`]):
//! 1. finished in the store: nothing to do;
//! 2. a position in the store: resume after it (at it, inside an aggregate);
//! 3. a parent still listed and not finished by this pipeline: wait;
//! 4. a parent from which this pipeline acknowledged anything: TRIM_HORIZON
//!    (everything in a child comes after what was read of its parents);
//! 5. otherwise the source's start: TRIM_HORIZON, or AT_TIMESTAMP(moment).
//!
//! Invariants: no rule skips a record at or after the pipeline's start that
//! is still in the stream; a child is never read before its listed parents
//! are finished; the same stored state always gives the same decision.

use super::reader::StartAt;
use crate::checkpoint::Position;
use crate::record::ShardPosition;
use aws_smithy_types::DateTime;

/// A source's start position, resolved for one pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceStart {
    /// The oldest record still in the stream.
    TrimHorizon,
    /// Records that arrived at or after this moment (ms since the epoch):
    /// `at_timestamp`, or `latest` as the moment the pipeline first started.
    Moment(i64),
}

/// A pipeline's state in one parent of the shard.
#[derive(Debug, Clone, Default)]
pub struct Parent {
    /// Still listed by ListShards (not yet past retention).
    pub listed: bool,
    /// What the store holds for this pipeline in the parent.
    pub stored: Option<Position>,
}

/// Where one pipeline starts on one shard.
#[derive(Debug, Clone, PartialEq)]
pub enum Start {
    /// The shard is finished for this pipeline.
    Done,
    /// A listed parent is not finished yet: not ready.
    Wait,
    /// Read from here; records at or before `skip` are already acknowledged.
    Read {
        at: StartAt,
        skip: Option<ShardPosition>,
    },
}

/// Rules 1–5 of the module doc, for one pipeline on one shard.
pub fn pipeline_start(own: Option<&Position>, parents: &[Parent], from: SourceStart) -> Start {
    if let Some(own) = own {
        if own.finished {
            return Start::Done;
        }
        if let Some(done) = own.done() {
            return Start::Read {
                at: StartAt::after(&done),
                skip: Some(done),
            };
        }
        if let Some(ms) = own.latest_since_ms {
            // Written by older versions: the shard was started at LATEST then.
            return Start::Read {
                at: StartAt::AtTimestamp(DateTime::from_millis(ms)),
                skip: None,
            };
        }
    }
    let finished = |p: &Parent| p.stored.as_ref().is_some_and(|s| s.finished);
    if parents.iter().any(|p| p.listed && !finished(p)) {
        return Start::Wait;
    }
    let read_from_parent = parents
        .iter()
        .any(|p| p.stored.as_ref().is_some_and(|s| s.sequence.is_some()));
    let at = match from {
        _ if read_from_parent => StartAt::TrimHorizon,
        SourceStart::TrimHorizon => StartAt::TrimHorizon,
        SourceStart::Moment(ms) => StartAt::AtTimestamp(DateTime::from_millis(ms)),
    };
    Start::Read { at, skip: None }
}

/// How one pipeline's lane begins on the shard.
#[derive(Debug, Clone, PartialEq)]
pub enum LaneStart {
    /// No lane: the shard is finished for this pipeline.
    None,
    /// On the shared reader from its first batch, skipping what `skip` covers.
    Attached { skip: Option<ShardPosition> },
    /// On its own reader from `at` (the shared reader cannot serve its start);
    /// it rejoins the shared reader once caught up.
    Detached { at: StartAt },
}

/// What the shard's task does.
#[derive(Debug, Clone, PartialEq)]
pub enum ShardPlan {
    /// Some pipeline waits for a parent: do not start yet.
    Wait,
    /// Every pipeline finished the shard.
    Finished,
    /// Read: the shared reader from `shared`, and each pipeline's lane (in
    /// the order of `starts`).
    Read {
        shared: StartAt,
        lanes: Vec<LaneStart>,
    },
}

/// Combines the pipelines' starts on one shard: the shared reader starts at
/// the earliest start it can compare (trim horizon, else the earliest
/// position, else the earliest moment); a lane whose start it cannot serve
/// by skipping (a moment, when the shared reader starts elsewhere) begins
/// detached on its own reader.
pub fn plan(starts: &[Start]) -> ShardPlan {
    if starts.contains(&Start::Wait) {
        return ShardPlan::Wait;
    }
    let reads: Vec<(&StartAt, &Option<ShardPosition>)> = starts
        .iter()
        .filter_map(|s| match s {
            Start::Read { at, skip } => Some((at, skip)),
            _ => None,
        })
        .collect();
    if reads.is_empty() {
        return ShardPlan::Finished;
    }
    let shared = if reads.iter().any(|(at, _)| **at == StartAt::TrimHorizon) {
        StartAt::TrimHorizon
    } else if let Some(earliest) = reads
        .iter()
        .filter_map(|(_, skip)| skip.as_ref())
        .min_by(|a, b| a.cmp_position(b))
    {
        StartAt::after(earliest)
    } else {
        reads
            .iter()
            .map(|(at, _)| (*at).clone())
            .min_by_key(moment_ms)
            .unwrap_or(StartAt::TrimHorizon)
    };
    let lanes = starts
        .iter()
        .map(|s| match s {
            Start::Done | Start::Wait => LaneStart::None,
            Start::Read { at, skip } => {
                let servable = *at == shared
                    || (skip.is_some()
                        && matches!(
                            shared,
                            StartAt::TrimHorizon
                                | StartAt::AfterSequence(_)
                                | StartAt::AtSequence(_)
                        ));
                if servable {
                    LaneStart::Attached { skip: skip.clone() }
                } else {
                    LaneStart::Detached { at: at.clone() }
                }
            }
        })
        .collect();
    ShardPlan::Read { shared, lanes }
}

fn moment_ms(at: &StartAt) -> i64 {
    match at {
        StartAt::AtTimestamp(ts) => ts.to_millis().unwrap_or(i64::MAX),
        _ => i64::MAX,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: i64 = 1_700_000_000_000;

    fn at_seq(seq: &str) -> Position {
        Position {
            sequence: Some(seq.into()),
            sub_sequence: None,
            finished: false,
            latest_since_ms: None,
        }
    }

    fn inside_aggregate(seq: &str, sub: u64) -> Position {
        Position {
            sub_sequence: Some(sub),
            ..at_seq(seq)
        }
    }

    fn finished(seq: Option<&str>) -> Position {
        Position {
            sequence: seq.map(str::to_string),
            sub_sequence: None,
            finished: true,
            latest_since_ms: None,
        }
    }

    fn pos(seq: &str, sub: Option<u64>) -> ShardPosition {
        ShardPosition {
            sequence: seq.into(),
            sub,
        }
    }

    fn moment(ms: i64) -> StartAt {
        StartAt::AtTimestamp(DateTime::from_millis(ms))
    }

    fn read(at: StartAt) -> Start {
        Start::Read { at, skip: None }
    }

    const FROMS: [SourceStart; 2] = [SourceStart::TrimHorizon, SourceStart::Moment(T)];

    /// The source's own start when nothing else decides.
    fn configured(from: SourceStart) -> StartAt {
        match from {
            SourceStart::TrimHorizon => StartAt::TrimHorizon,
            SourceStart::Moment(ms) => moment(ms),
        }
    }

    #[test]
    fn a_checkpoint_decides_whatever_the_start_position_and_the_parents() {
        let parent_states = [
            vec![],
            vec![Parent {
                listed: true,
                stored: None,
            }],
            vec![Parent {
                listed: false,
                stored: None,
            }],
        ];
        for from in FROMS {
            for parents in &parent_states {
                assert_eq!(
                    pipeline_start(Some(&at_seq("42")), parents, from),
                    Start::Read {
                        at: StartAt::AfterSequence("42".into()),
                        skip: Some(pos("42", None)),
                    }
                );
                assert_eq!(
                    pipeline_start(Some(&inside_aggregate("42", 3)), parents, from),
                    Start::Read {
                        at: StartAt::AtSequence("42".into()),
                        skip: Some(pos("42", Some(3))),
                    },
                    "inside an aggregate: read it again, skip what was acknowledged"
                );
                assert_eq!(
                    pipeline_start(Some(&finished(Some("42"))), parents, from),
                    Start::Done
                );
                assert_eq!(
                    pipeline_start(Some(&finished(None)), parents, from),
                    Start::Done
                );
            }
        }
    }

    #[test]
    fn a_shard_without_checkpoint_or_parents_starts_at_the_source_start() {
        for from in FROMS {
            assert_eq!(pipeline_start(None, &[], from), read(configured(from)));
        }
    }

    #[test]
    fn an_open_parent_makes_the_child_wait() {
        for from in FROMS {
            for stored in [None, Some(at_seq("7")), Some(inside_aggregate("7", 0))] {
                let parents = [Parent {
                    listed: true,
                    stored,
                }];
                assert_eq!(pipeline_start(None, &parents, from), Start::Wait);
            }
            // A merge: one parent finished, the other still being read.
            let parents = [
                Parent {
                    listed: true,
                    stored: Some(finished(Some("1"))),
                },
                Parent {
                    listed: true,
                    stored: Some(at_seq("5")),
                },
            ];
            assert_eq!(pipeline_start(None, &parents, from), Start::Wait);
        }
    }

    #[test]
    fn the_child_of_a_parent_read_to_its_end_starts_at_trim_horizon_in_any_run() {
        // The reported loss: `latest`, the parent read to its end in an
        // earlier run, the child empty then; after a restart the child must
        // start at TRIM_HORIZON, not at a new LATEST.
        for from in FROMS {
            let parents = [Parent {
                listed: true,
                stored: Some(finished(Some("99"))),
            }];
            assert_eq!(
                pipeline_start(None, &parents, from),
                read(StartAt::TrimHorizon)
            );
            // Two parents (a merge), both finished.
            let parents = [
                Parent {
                    listed: true,
                    stored: Some(finished(Some("3"))),
                },
                Parent {
                    listed: true,
                    stored: Some(finished(None)),
                },
            ];
            assert_eq!(
                pipeline_start(None, &parents, from),
                read(StartAt::TrimHorizon)
            );
        }
    }

    #[test]
    fn a_parent_finished_without_records_leaves_the_child_at_the_source_start() {
        // The parent held nothing at or after the start moment (it closed
        // before it): the child's records before that moment are skipped too.
        for from in FROMS {
            let parents = [Parent {
                listed: true,
                stored: Some(finished(None)),
            }];
            assert_eq!(pipeline_start(None, &parents, from), read(configured(from)));
        }
    }

    #[test]
    fn parents_past_retention() {
        for from in FROMS {
            // Never read by this pipeline: the source's start applies.
            let gone = [Parent {
                listed: false,
                stored: None,
            }];
            assert_eq!(pipeline_start(None, &gone, from), read(configured(from)));
            // Read in part before it expired: the child continues the lineage.
            let partly = [Parent {
                listed: false,
                stored: Some(at_seq("12")),
            }];
            assert_eq!(
                pipeline_start(None, &partly, from),
                read(StartAt::TrimHorizon)
            );
            let whole = [Parent {
                listed: false,
                stored: Some(finished(Some("12"))),
            }];
            assert_eq!(
                pipeline_start(None, &whole, from),
                read(StartAt::TrimHorizon)
            );
        }
    }

    #[test]
    fn a_legacy_latest_mark_resumes_at_its_moment() {
        let own = Position {
            sequence: None,
            sub_sequence: None,
            finished: false,
            latest_since_ms: Some(T - 5),
        };
        for from in FROMS {
            assert_eq!(pipeline_start(Some(&own), &[], from), read(moment(T - 5)));
        }
    }

    fn after(seq: &str) -> Start {
        Start::Read {
            at: StartAt::AfterSequence(seq.into()),
            skip: Some(pos(seq, None)),
        }
    }

    #[test]
    fn the_shared_reader_starts_at_the_earliest_position_and_serves_the_others_by_skipping() {
        let plan = plan(&[after("200"), after("100"), Start::Done]);
        assert_eq!(
            plan,
            ShardPlan::Read {
                shared: StartAt::AfterSequence("100".into()),
                lanes: vec![
                    LaneStart::Attached {
                        skip: Some(pos("200", None))
                    },
                    LaneStart::Attached {
                        skip: Some(pos("100", None))
                    },
                    LaneStart::None,
                ],
            }
        );
    }

    #[test]
    fn trim_horizon_serves_every_position() {
        let plan = plan(&[after("200"), read(StartAt::TrimHorizon)]);
        assert_eq!(
            plan,
            ShardPlan::Read {
                shared: StartAt::TrimHorizon,
                lanes: vec![
                    LaneStart::Attached {
                        skip: Some(pos("200", None))
                    },
                    LaneStart::Attached { skip: None },
                ],
            }
        );
    }

    #[test]
    fn a_new_pipeline_with_a_moment_honours_it_whether_the_others_are_ahead_or_behind() {
        // The reported miss: a pipeline without a position and with
        // at_timestamp joined the others' position. It now reads from its
        // own moment on its own reader, whichever side of the others it is.
        let plan = plan(&[after("500"), read(moment(T))]);
        assert_eq!(
            plan,
            ShardPlan::Read {
                shared: StartAt::AfterSequence("500".into()),
                lanes: vec![
                    LaneStart::Attached {
                        skip: Some(pos("500", None))
                    },
                    LaneStart::Detached { at: moment(T) },
                ],
            }
        );
    }

    #[test]
    fn the_earliest_moment_is_shared_and_a_later_one_reads_alone() {
        let plan = plan(&[read(moment(T + 10)), read(moment(T)), read(moment(T))]);
        assert_eq!(
            plan,
            ShardPlan::Read {
                shared: moment(T),
                lanes: vec![
                    LaneStart::Detached { at: moment(T + 10) },
                    LaneStart::Attached { skip: None },
                    LaneStart::Attached { skip: None },
                ],
            }
        );
    }

    #[test]
    fn any_waiting_pipeline_holds_the_shard_and_all_done_finishes_it() {
        assert_eq!(plan(&[after("1"), Start::Wait]), ShardPlan::Wait);
        assert_eq!(plan(&[Start::Done, Start::Done]), ShardPlan::Finished);
        assert_eq!(plan(&[]), ShardPlan::Finished);
    }

    #[test]
    fn the_whole_matrix_never_skips_and_never_reads_a_child_early() {
        // start position × own checkpoint × parent state × another pipeline.
        let owns: [Option<Position>; 4] = [
            None,
            Some(at_seq("50")),
            Some(inside_aggregate("50", 2)),
            Some(finished(Some("50"))),
        ];
        let parents: [Vec<Parent>; 5] = [
            vec![],
            vec![Parent {
                listed: true,
                stored: Some(finished(Some("9"))),
            }],
            vec![Parent {
                listed: true,
                stored: Some(at_seq("9")),
            }],
            vec![Parent {
                listed: false,
                stored: None,
            }],
            vec![Parent {
                listed: false,
                stored: Some(at_seq("9")),
            }],
        ];
        let others = [None, Some(after("10")), Some(after("90"))];
        for from in FROMS {
            for own in &owns {
                for ps in &parents {
                    for other in &others {
                        let mine = pipeline_start(own.as_ref(), ps, from);
                        let mut starts = vec![mine.clone()];
                        starts.extend(other.clone());
                        let decided = plan(&starts);
                        let open_parent = ps
                            .iter()
                            .any(|p| p.listed && !p.stored.as_ref().is_some_and(|s| s.finished));
                        match (&mine, &decided) {
                            (Start::Wait, ShardPlan::Wait) => assert!(open_parent),
                            (Start::Wait, _) => panic!("a waiting pipeline was started"),
                            (Start::Done, _) => {
                                assert!(own.as_ref().is_some_and(|o| o.finished))
                            }
                            (Start::Read { at, skip }, ShardPlan::Read { shared, lanes }) => {
                                assert!(!open_parent || own.is_some(), "read before its parent");
                                // Where the lane really begins:
                                match &lanes[0] {
                                    LaneStart::Attached { skip: s } => {
                                        assert_eq!(s, skip);
                                        // The shared start is at or before the lane's.
                                        if let Some(skip) = skip {
                                            if let StartAt::AfterSequence(seq)
                                            | StartAt::AtSequence(seq) = shared
                                            {
                                                assert!(
                                                    crate::record::compare_sequence(
                                                        seq,
                                                        &skip.sequence
                                                    )
                                                    .is_le()
                                                );
                                            }
                                        } else {
                                            assert_eq!(shared, at);
                                        }
                                    }
                                    LaneStart::Detached { at: a } => assert_eq!(a, at),
                                    LaneStart::None => panic!("a reading pipeline has no lane"),
                                }
                            }
                            (Start::Read { .. }, other) => {
                                panic!("a reading pipeline got {other:?}")
                            }
                        }
                    }
                }
            }
        }
    }
}
