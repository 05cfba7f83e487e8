//! The integrity state machine: `lambda_norm` samples in, at most one state
//! transition out per sample, with the hysteresis of the v2 design.
//!
//! - A sample is *below high* when `lambda_norm < threshold_high` and *below low*
//!   when `lambda_norm < threshold_low`.
//! - Escalation: `critical_samples` consecutive samples below low reach critical
//!   from normal or stress (escalation may jump); `degrade_samples` consecutive
//!   samples below high take normal to stress.
//! - Recovery steps down one level at a time: critical → stress once
//!   `lambda_norm ≥ threshold_low + restore_threshold_offset` has held for
//!   `restore_hold_seconds`, stress → normal likewise with `threshold_high`.
//!   Each step needs its own hold, counted from the sample that started it.
//! - No transition at all within `cooldown_after_transition_seconds` of the last
//!   one; a transition held back by the cooldown happens on the first sample
//!   after it, if its condition still holds.
//! - Before the first sample the state is `unknown`. A healthy sample (at or
//!   above `threshold_high`) makes it normal at once; anything worse obeys the
//!   same counts as from normal, so that a fresh start or registration never
//!   jumps to critical (or stress) on one sample: until the counts are met
//!   the state stays `unknown`, which the gate treats with caution.
//! - A sample that is not a number in [0, 1] (NaN, ±∞, out of range) is refused:
//!   it changes no count, hold or state. NaN compares false with every
//!   threshold, so taken as-is it would look healthy; refusing it keeps the
//!   state the last valid sample set, and [`Controller::try_observe`] says why,
//!   so the caller can record the failed sample.
//!
//! Time is injected ([`Micros`]), so every rule is tested exactly. This module
//! does not know where samples come from or what a state permits.

use serde::{Deserialize, Serialize};

use crate::policy::{Hysteresis, Thresholds};
use crate::state::State;
use crate::{Error, Micros, SECOND};

/// A state change decided by [`Controller::observe`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Transition {
    pub from: State,
    pub to: State,
}

impl Transition {
    /// How a state-change event names it: the first state a collection
    /// takes, a move to a worse state, or back to a better one.
    pub fn direction(&self) -> &'static str {
        if self.from == State::Unknown {
            "initial"
        } else if self.to > self.from {
            "escalation"
        } else {
            "recovery"
        }
    }
}

/// The controller's memory between samples. It is serialized into the
/// collection's state row so that a restart resumes counts and holds; a new
/// collection's is `{}` (every field at its default).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Controller {
    pub state: State,
    /// Consecutive samples below `threshold_high`.
    pub below_high: u32,
    /// Consecutive samples below `threshold_low`.
    pub below_low: u32,
    /// When the current run of samples at or above the recovery level began.
    pub recovering_since: Option<Micros>,
    pub last_transition: Option<Micros>,
}

impl Default for Controller {
    fn default() -> Self {
        Controller {
            state: State::Unknown,
            below_high: 0,
            below_low: 0,
            recovering_since: None,
            last_transition: None,
        }
    }
}

impl Controller {
    /// Feeds one sample taken at `now`; returns the transition it causes, if any.
    /// A sample outside [0, 1] (or not a number) is ignored: nothing changes and
    /// `None` is returned. [`Controller::try_observe`] reports it instead.
    pub fn observe(
        &mut self,
        lambda_norm: f64,
        now: Micros,
        thresholds: &Thresholds,
        hysteresis: &Hysteresis,
    ) -> Option<Transition> {
        self.try_observe(lambda_norm, now, thresholds, hysteresis)
            .ok()
            .flatten()
    }

    /// [`Controller::observe`], refusing a sample outside [0, 1] (NaN and ±∞
    /// included) with an error that names it, and leaving the controller as it
    /// was.
    pub fn try_observe(
        &mut self,
        lambda_norm: f64,
        now: Micros,
        thresholds: &Thresholds,
        hysteresis: &Hysteresis,
    ) -> Result<Option<Transition>, Error> {
        if !(0.0..=1.0).contains(&lambda_norm) {
            return Err(Error::InvalidNumber {
                what: "the sampled lambda_norm".into(),
                expected: "a number in [0, 1]",
                value: lambda_norm,
            });
        }
        Ok(self.step(lambda_norm, now, thresholds, hysteresis))
    }

    fn step(
        &mut self,
        lambda_norm: f64,
        now: Micros,
        thresholds: &Thresholds,
        hysteresis: &Hysteresis,
    ) -> Option<Transition> {
        let below_high = lambda_norm < thresholds.high;
        let below_low = lambda_norm < thresholds.low;
        self.below_high = if below_high { self.below_high + 1 } else { 0 };
        self.below_low = if below_low { self.below_low + 1 } else { 0 };
        let recovery_level = |state: State| match state {
            State::Critical => thresholds.low + hysteresis.restore_threshold_offset,
            _ => thresholds.high + hysteresis.restore_threshold_offset,
        };
        if matches!(self.state, State::Stress | State::Critical) {
            if lambda_norm >= recovery_level(self.state) {
                self.recovering_since.get_or_insert(now);
            } else {
                self.recovering_since = None;
            }
        }

        let target = match self.state {
            State::Unknown if !below_high => State::Normal,
            state if state != State::Critical && self.below_low >= hysteresis.critical_samples => {
                State::Critical
            }
            State::Normal | State::Unknown if self.below_high >= hysteresis.degrade_samples => {
                State::Stress
            }
            state @ (State::Stress | State::Critical)
                if self.recovering_since.is_some_and(|since| {
                    now - since >= hysteresis.restore_hold_seconds as Micros * SECOND
                }) =>
            {
                state.recovered()
            }
            _ => return None,
        };
        let cooling_down = self.last_transition.is_some_and(|at| {
            now - at < hysteresis.cooldown_after_transition_seconds as Micros * SECOND
        });
        if cooling_down && self.state != State::Unknown {
            return None;
        }
        let transition = Transition {
            from: self.state,
            to: target,
        };
        self.state = target;
        self.last_transition = Some(now);
        // The next recovery step's hold starts now if this sample already qualifies.
        self.recovering_since =
            (target != State::Normal && lambda_norm >= recovery_level(target)).then_some(now);
        Some(transition)
    }
}

/// One move the state can make next, and how far the samples have got
/// toward it ([`Controller::progress`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Move {
    pub to: State,
    /// What the samples must do, in words.
    pub needs: String,
    /// Consecutive samples seen, of `samples_needed` (escalations).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub samples_seen: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub samples_needed: Option<u32>,
    /// How long the recovery level has held, of `hold_seconds` (recoveries).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub held_seconds: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hold_seconds: Option<u32>,
    /// The earliest sample at which it can happen if every sample from the
    /// next one on meets the condition and samples come every `interval`
    /// (a sample an operator asks for, or a worker restart, can come
    /// sooner), after the cooldown.
    pub earliest: Micros,
}

impl Controller {
    /// The moves open from the current state and how far each has got, at
    /// `now`, for samples taken every `interval` (the last at `last_sample`).
    /// Escalations count consecutive samples; recoveries need the recovery
    /// level held for `restore_hold_seconds`; none happens within the
    /// cooldown of the last transition (from `unknown` the cooldown does
    /// not apply).
    pub fn progress(
        &self,
        last_sample: Option<Micros>,
        interval: Micros,
        now: Micros,
        thresholds: &Thresholds,
        hysteresis: &Hysteresis,
    ) -> Vec<Move> {
        let interval = interval.max(SECOND);
        // The next sample is due an interval after the last, and not before
        // now (a stale collection is sampled as soon as the worker can).
        let base = last_sample.map_or(now, |at| at.max(now - interval));
        let cooldown_end = match (self.state, self.last_transition) {
            (State::Unknown, _) | (_, None) => Micros::MIN,
            (_, Some(at)) => at + hysteresis.cooldown_after_transition_seconds as Micros * SECOND,
        };
        // The first sample, `k` ≥ `samples` intervals after the base, at or after `not_before`.
        let sample_at = |samples: i64, not_before: Micros| {
            let wait = not_before.max(cooldown_end).saturating_sub(base).max(0);
            base + samples.max(1).max((wait + interval - 1) / interval) * interval
        };
        let escalation = |to: State, seen: u32, needed: u32, below: f64| Move {
            to,
            needs: format!("{needed} consecutive samples with lambda_norm < {below}"),
            samples_seen: Some(seen.min(needed)),
            samples_needed: Some(needed),
            held_seconds: None,
            hold_seconds: None,
            earliest: sample_at(needed.saturating_sub(seen) as i64, Micros::MIN),
        };
        let recovery = |to: State, level: f64| {
            let hold = hysteresis.restore_hold_seconds;
            let since = self.recovering_since.unwrap_or(base + interval);
            Move {
                to,
                needs: format!(
                    "lambda_norm >= {} on every sample for {hold} s",
                    round(level)
                ),
                samples_seen: None,
                samples_needed: None,
                // Held as far as the samples confirm it: to the last one.
                held_seconds: Some(
                    self.recovering_since
                        .map_or(0, |s| (last_sample.unwrap_or(now) - s).max(0) / SECOND),
                ),
                hold_seconds: Some(hold),
                earliest: sample_at(1, since + hold as Micros * SECOND),
            }
        };
        let offset = hysteresis.restore_threshold_offset;
        let to_stress = escalation(
            State::Stress,
            self.below_high,
            hysteresis.degrade_samples,
            thresholds.high,
        );
        let to_critical = escalation(
            State::Critical,
            self.below_low,
            hysteresis.critical_samples,
            thresholds.low,
        );
        match self.state {
            State::Unknown => vec![
                Move {
                    to: State::Normal,
                    needs: format!("one sample with lambda_norm >= {}", thresholds.high),
                    samples_seen: Some(0),
                    samples_needed: Some(1),
                    held_seconds: None,
                    hold_seconds: None,
                    earliest: sample_at(1, Micros::MIN),
                },
                to_stress,
                to_critical,
            ],
            State::Normal => vec![to_stress, to_critical],
            State::Stress => vec![
                to_critical,
                recovery(State::Normal, thresholds.high + offset),
            ],
            State::Critical => vec![recovery(State::Stress, thresholds.low + offset)],
        }
    }
}

/// A threshold plus an offset as a DBA would write it (0.3 + 0.1 is 0.4, not 0.4000000000000001).
fn round(x: f64) -> f64 {
    (x * 1e9).round() / 1e9
}

#[cfg(test)]
mod tests {
    use super::*;

    const THRESHOLDS: Thresholds = Thresholds {
        high: 0.8,
        low: 0.3,
    };

    #[test]
    fn a_transition_is_initial_an_escalation_or_a_recovery() {
        let t = |from, to| Transition { from, to }.direction();
        assert_eq!(t(State::Unknown, State::Critical), "initial");
        assert_eq!(t(State::Unknown, State::Normal), "initial");
        assert_eq!(t(State::Normal, State::Stress), "escalation");
        assert_eq!(t(State::Stress, State::Critical), "escalation");
        assert_eq!(t(State::Critical, State::Stress), "recovery");
        assert_eq!(t(State::Stress, State::Normal), "recovery");
    }

    fn v2() -> Hysteresis {
        Hysteresis::default()
    }

    /// Feeds `(seconds, lambda_norm)` samples and returns the state after each.
    fn run(
        controller: &mut Controller,
        hysteresis: &Hysteresis,
        samples: &[(i64, f64)],
    ) -> Vec<State> {
        samples
            .iter()
            .map(|&(t, value)| {
                controller.observe(value, t * SECOND, &THRESHOLDS, hysteresis);
                controller.state
            })
            .collect()
    }

    fn at(state: State, since: i64) -> Controller {
        Controller {
            state,
            last_transition: Some(since * SECOND),
            ..Controller::default()
        }
    }

    use State::*;

    #[test]
    fn from_unknown_healthy_is_at_once_and_faults_obey_the_counts() {
        let mut c = Controller::default();
        let t = c.observe(1.0, 0, &THRESHOLDS, &v2()).unwrap();
        assert_eq!((t.from, t.to), (Unknown, Normal));

        let mut c = Controller::default();
        assert_eq!(
            run(&mut c, &v2(), &[(0, 0.1), (60, 0.1)]),
            [Unknown, Critical]
        );
        let mut c = Controller::default();
        assert_eq!(
            run(&mut c, &v2(), &[(0, 0.5), (60, 0.5), (120, 0.5)]),
            [Unknown, Unknown, Stress]
        );
        // One bad sample, then healthy ones: never left normal territory.
        let mut c = Controller::default();
        assert_eq!(
            run(&mut c, &v2(), &[(0, 0.1), (60, 1.0), (120, 1.0)]),
            [Unknown, Normal, Normal]
        );
    }

    #[test]
    fn stress_needs_three_samples_below_high() {
        let mut c = at(Normal, -1000);
        assert_eq!(
            run(&mut c, &v2(), &[(0, 0.7), (60, 0.7), (120, 0.7)]),
            [Normal, Normal, Stress]
        );
    }

    #[test]
    fn a_healthy_sample_resets_the_degrade_count() {
        let mut c = at(Normal, -1000);
        let states = run(
            &mut c,
            &v2(),
            &[(0, 0.7), (60, 0.7), (120, 0.9), (180, 0.7), (240, 0.7)],
        );
        assert_eq!(states, [Normal; 5]);
    }

    #[test]
    fn critical_needs_two_samples_and_may_jump_from_normal() {
        let mut c = at(Normal, -1000);
        assert_eq!(
            run(&mut c, &v2(), &[(0, 0.1), (60, 0.1)]),
            [Normal, Critical]
        );
    }

    #[test]
    fn critical_from_stress_needs_two_samples_below_low() {
        let mut c = at(Stress, -1000);
        assert_eq!(
            run(
                &mut c,
                &v2(),
                &[(0, 0.2), (60, 0.5), (120, 0.2), (180, 0.2)]
            ),
            [Stress, Stress, Stress, Critical]
        );
    }

    #[test]
    fn recovery_from_stress_waits_for_the_hold() {
        let mut c = at(Stress, -1000);
        let states = run(
            &mut c,
            &v2(),
            &[(0, 0.95), (240, 0.95), (299, 0.95), (300, 0.95)],
        );
        assert_eq!(states, [Stress, Stress, Stress, Normal]);
    }

    #[test]
    fn recovery_needs_the_offset_above_the_threshold() {
        let mut c = at(Stress, -1000);
        // 0.85 is above threshold_high but below high + offset = 0.9.
        assert_eq!(
            run(&mut c, &v2(), &[(0, 0.85), (400, 0.85), (800, 0.85)]),
            [Stress; 3]
        );
    }

    #[test]
    fn a_dip_restarts_the_hold() {
        let mut c = at(Stress, -1000);
        let states = run(
            &mut c,
            &v2(),
            &[
                (0, 0.95),
                (200, 0.85),
                (260, 0.95),
                (500, 0.95),
                (560, 0.95),
            ],
        );
        assert_eq!(states, [Stress, Stress, Stress, Stress, Normal]);
    }

    #[test]
    fn recovery_from_critical_steps_one_level_at_a_time() {
        let mut c = at(Critical, -1000);
        let states = run(
            &mut c,
            &v2(),
            &[(0, 1.0), (300, 1.0), (360, 1.0), (599, 1.0), (600, 1.0)],
        );
        assert_eq!(states, [Critical, Stress, Stress, Stress, Normal]);
    }

    #[test]
    fn critical_recovers_to_stress_at_low_plus_offset() {
        let mut c = at(Critical, -1000);
        // 0.5 ≥ 0.3 + 0.1 restores to stress but never to normal.
        assert_eq!(
            run(&mut c, &v2(), &[(0, 0.5), (300, 0.5), (900, 0.5)]),
            [Critical, Stress, Stress]
        );
    }

    #[test]
    fn cooldown_blocks_a_transition_until_it_ends() {
        let mut c = at(Normal, -1000);
        let fast = Hysteresis {
            restore_hold_seconds: 0,
            ..v2()
        };
        // Recovery at 0 would be immediate, but stress was entered at 0: the cooldown
        // holds it back until 60.
        let states = run(
            &mut c,
            &fast,
            &[
                (-120, 0.5),
                (-60, 0.5),
                (0, 0.5),
                (30, 1.0),
                (59, 1.0),
                (60, 1.0),
            ],
        );
        assert_eq!(states, [Normal, Normal, Stress, Stress, Stress, Normal]);
    }

    #[test]
    fn escalation_held_by_cooldown_happens_right_after_it() {
        let mut c = at(Stress, 0);
        assert_eq!(
            run(&mut c, &v2(), &[(10, 0.1), (20, 0.1), (40, 0.1), (60, 0.1)]),
            [Stress, Stress, Stress, Critical]
        );
    }

    #[test]
    fn flapping_every_sample_makes_at_most_one_transition_per_cooldown() {
        let fast = Hysteresis {
            degrade_samples: 1,
            critical_samples: 1,
            restore_hold_seconds: 0,
            restore_threshold_offset: 0.0,
            cooldown_after_transition_seconds: 60,
        };
        let mut c = at(Normal, -1000);
        let mut transitions = Vec::new();
        for i in 0..600 {
            let value = if i % 2 == 0 { 0.79 } else { 0.81 };
            if c.observe(value, i * SECOND, &THRESHOLDS, &fast).is_some() {
                transitions.push(i);
            }
        }
        assert!(
            transitions.windows(2).all(|w| w[1] - w[0] >= 60),
            "{transitions:?}"
        );
        assert!(transitions.len() <= 10);
    }

    #[test]
    fn flapping_under_the_default_policy_never_transitions() {
        let mut c = at(Normal, -1000);
        let samples: Vec<(i64, f64)> = (0..100)
            .map(|i| (i * 60, if i % 2 == 0 { 0.79 } else { 0.81 }))
            .collect();
        assert!(run(&mut c, &v2(), &samples).iter().all(|&s| s == Normal));
    }

    #[test]
    fn samples_that_are_not_numbers_in_range_are_refused_and_change_nothing() {
        for start in [
            Controller::default(),
            at(Stress, -1000),
            at(Critical, -1000),
        ] {
            let mut c = start.clone();
            c.below_high = 2;
            let before = c.clone();
            for value in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, -0.5, 1.5] {
                let err = c.try_observe(value, 0, &THRESHOLDS, &v2()).unwrap_err();
                assert!(
                    err.to_string()
                        .starts_with("the sampled lambda_norm must be a number in [0, 1]"),
                    "{err}"
                );
                assert_eq!(c.observe(value, SECOND, &THRESHOLDS, &v2()), None);
                assert_eq!(c, before, "{value}");
            }
        }
        // In particular NaN never reads as healthy: unknown stays unknown.
        let mut c = Controller::default();
        c.observe(f64::NAN, 0, &THRESHOLDS, &v2());
        assert_eq!(c.state, Unknown);
    }

    #[test]
    fn controller_round_trips_through_json() {
        let mut c = at(Stress, 5);
        c.below_high = 2;
        c.recovering_since = Some(7);
        let json = serde_json::to_string(&c).unwrap();
        assert_eq!(serde_json::from_str::<Controller>(&json).unwrap(), c);
    }
}

#[cfg(test)]
mod progress_tests {
    use super::*;

    const THRESHOLDS: Thresholds = Thresholds {
        high: 0.8,
        low: 0.3,
    };
    const INTERVAL: Micros = 10 * SECOND;

    #[test]
    fn escalations_count_samples_and_wait_out_the_cooldown() {
        let h = Hysteresis::default();
        // Normal since t=0, one sample below high at t=100.
        let c = Controller {
            state: State::Normal,
            below_high: 1,
            below_low: 0,
            recovering_since: None,
            last_transition: Some(0),
        };
        let moves = c.progress(Some(100 * SECOND), INTERVAL, 105 * SECOND, &THRESHOLDS, &h);
        assert_eq!(moves[0].to, State::Stress);
        assert_eq!(
            (moves[0].samples_seen, moves[0].samples_needed),
            (Some(1), Some(3))
        );
        assert_eq!(moves[0].earliest, 120 * SECOND);
        assert_eq!(moves[1].to, State::Critical);
        assert_eq!(moves[1].earliest, 120 * SECOND);
        // Just after a transition the cooldown (60 s) comes first.
        let c = Controller {
            last_transition: Some(95 * SECOND),
            ..c
        };
        let moves = c.progress(Some(100 * SECOND), INTERVAL, 105 * SECOND, &THRESHOLDS, &h);
        assert_eq!(moves[0].earliest, 160 * SECOND);
    }

    #[test]
    fn a_stale_collection_s_next_sample_is_now_not_in_the_past() {
        let h = Hysteresis::default();
        let c = Controller {
            state: State::Normal,
            below_high: 2,
            ..Controller::default()
        };
        // The last sample an hour ago: the next one is due now.
        let now = 4_000 * SECOND;
        let moves = c.progress(Some(400 * SECOND), INTERVAL, now, &THRESHOLDS, &h);
        assert_eq!(moves[0].earliest, now);
    }

    #[test]
    fn recoveries_count_the_hold_from_its_first_sample() {
        let h = Hysteresis::default();
        let c = Controller {
            state: State::Stress,
            below_high: 0,
            below_low: 0,
            recovering_since: Some(40 * SECOND),
            last_transition: Some(0),
        };
        let moves = c.progress(Some(100 * SECOND), INTERVAL, 105 * SECOND, &THRESHOLDS, &h);
        let up = &moves[1];
        assert_eq!(up.to, State::Normal);
        assert_eq!(up.needs, "lambda_norm >= 0.9 on every sample for 300 s");
        assert_eq!((up.held_seconds, up.hold_seconds), (Some(60), Some(300)));
        assert_eq!(up.earliest, 340 * SECOND);
        // Not recovering yet: the hold would start at the next sample.
        let c = Controller {
            recovering_since: None,
            ..c
        };
        let up = &c.progress(Some(100 * SECOND), INTERVAL, 105 * SECOND, &THRESHOLDS, &h)[1];
        assert_eq!((up.held_seconds, up.earliest), (Some(0), 410 * SECOND));
    }
}
