//! The schedule planner: which models to build when. Pure: it is given the time and what
//! happened so far ([`ScheduleState`]) and answers which schedule entries fire
//! ([`Schedules::due`]) and when to look again ([`Schedules::next_fire`]). Running the
//! builds, overlap, retries and timeouts belong to the runner; the entries carry those
//! settings for it.
//!
//! Schedules come from two places:
//!
//! - the walden configuration file: a list of [`ScheduleSpec`] (`select` in the selection
//!   syntax of [`Project::select`], a `cron` expression and/or `on_replication_advance`);
//! - the models' own `schedule` config (`config(schedule=...)`, YAML `config:`, folder
//!   `+schedule`): models with the same cron expression form one entry, named
//!   `config.schedule '<cron>'`.
//!
//! Cron expressions have 5 fields (minute hour day-of-month month day-of-week) or 6
//! (seconds first), or are one of `@yearly`, `@annually`, `@monthly`, `@weekly`, `@daily`,
//! `@midnight`, `@hourly`; they are evaluated in UTC. Day-of-month and day-of-week combine
//! with OR when both are restricted, as in Vixie cron.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use serde::Deserialize;

use crate::error::Error;
use crate::project::Project;

/// Parses a cron expression as walden accepts it (see the module docs).
///
/// `Err` with a message saying what is wrong and what is expected; an expression that
/// parses but matches no time at all (`0 0 30 2 *`) is an error too.
pub(crate) fn parse_cron(text: &str) -> Result<Cron, String> {
    let trimmed = text.trim();
    let expr = if trimmed.eq_ignore_ascii_case("@midnight") {
        "@daily"
    } else {
        trimmed
    };
    let expected = "expected 5 fields like '*/10 * * * *', 6 with seconds first, or @hourly/@daily/@weekly/@monthly/@yearly";
    if let Some(nick) = expr.strip_prefix('@') {
        let known = ["yearly", "annually", "monthly", "weekly", "daily", "hourly"];
        if !known.iter().any(|k| k.eq_ignore_ascii_case(nick)) {
            return Err(format!(
                "'{trimmed}' is not a cron expression (unknown '@{nick}'); {expected}"
            ));
        }
    }
    let fields = expr.split_whitespace().count();
    if !expr.starts_with('@') && !(5..=6).contains(&fields) {
        return Err(format!(
            "'{trimmed}' is not a cron expression ({fields} field{}); {expected}",
            if fields == 1 { "" } else { "s" }
        ));
    }
    let cron = CronParser::builder()
        .seconds(Seconds::Optional)
        .year(Year::Disallowed)
        .build()
        .parse(expr)
        .map_err(|e| {
            let detail = e.to_string();
            let detail = detail.trim_end_matches('.');
            format!("'{trimmed}' is not a cron expression ({detail}); {expected}")
        })?;
    let probe = Utc.with_ymd_and_hms(2000, 1, 1, 0, 0, 0).single();
    if let Some(probe) = probe
        && cron.find_next_occurrence(&probe, false).is_err()
    {
        return Err(format!("'{trimmed}' matches no time"));
    }
    Ok(cron)
}

fn default_true() -> bool {
    true
}

/// One schedule entry of the walden configuration file, as written (TOML or YAML).
///
/// ```toml
/// [[models.schedules]]
/// select = "tag:nightly"
/// cron = "0 3 * * *"
/// retries = 2
/// ```
///
/// At least one trigger is required: `cron`, `on_replication_advance = true`, or both.
/// Unknown keys are errors.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleSpec {
    /// The entry's name: its key in [`ScheduleState`] and in messages. Defaults to
    /// `select` (with ` !exclude` appended when there is an exclude); names must be unique.
    #[serde(default)]
    pub name: Option<String>,
    /// The models, in [`Project::select`] syntax (space: union, comma: intersection,
    /// `+` ancestors/descendants, `tag:`, `path:`, `namespace:`, ...). Must select at
    /// least one model that is built (ephemeral models are never scheduled).
    pub select: String,
    /// Models to leave out, in the same syntax.
    #[serde(default)]
    pub exclude: Option<String>,
    /// A cron expression (see the module docs).
    #[serde(default)]
    pub cron: Option<String>,
    /// Fire when the replication LSN has moved past the LSN of this entry's last run.
    #[serde(default)]
    pub on_replication_advance: bool,
    /// The least time between two runs of this entry, in milliseconds (0: none). A
    /// trigger arriving sooner waits; it is not lost.
    #[serde(default)]
    pub min_interval_ms: u64,
    /// For the runner: how long one run may take, in milliseconds (`None`: no limit).
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// For the runner: how many times a failed run is tried again.
    #[serde(default)]
    pub retries: u32,
    /// For the runner: the pause before the first retry, in milliseconds (default 10000).
    #[serde(default = "default_backoff")]
    pub retry_backoff_ms: u64,
    /// Whether the entry is in effect (default true).
    #[serde(default = "default_true")]
    pub enabled: bool,
}

fn default_backoff() -> u64 {
    10_000
}

impl ScheduleSpec {
    /// An entry selecting `select` on `cron`, other settings at their defaults.
    pub fn cron(select: impl Into<String>, cron: impl Into<String>) -> Self {
        ScheduleSpec {
            name: None,
            select: select.into(),
            exclude: None,
            cron: Some(cron.into()),
            on_replication_advance: false,
            min_interval_ms: 0,
            timeout_ms: None,
            retries: 0,
            retry_backoff_ms: default_backoff(),
            enabled: true,
        }
    }
}

/// Where a schedule entry comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScheduleOrigin {
    /// The configuration file's list, by 0-based position.
    Spec {
        /// Position in the list given to [`Schedules::new`].
        index: usize,
    },
    /// The models' own `schedule` config with this cron expression.
    ModelConfig,
}

/// A resolved schedule entry: its models and triggers.
#[derive(Debug, Clone)]
pub struct Schedule {
    /// Unique among the entries: the spec's name (default its `select`), or
    /// `config.schedule '<cron>'` for model-level schedules.
    pub id: String,
    /// Where it was declared.
    pub origin: ScheduleOrigin,
    /// The models to build, in dependency order (the project's build order), never
    /// empty, no ephemeral model.
    pub models: Vec<String>,
    /// The cron expression as written, if the entry has one.
    pub cron_text: Option<String>,
    cron: Option<Cron>,
    /// Whether a replication advance fires the entry.
    pub on_replication_advance: bool,
    /// The least time between two runs.
    pub min_interval: TimeDelta,
    /// For the runner: the limit of one run, in milliseconds.
    pub timeout_ms: Option<u64>,
    /// For the runner: retries of a failed run.
    pub retries: u32,
    /// For the runner: the pause before the first retry, in milliseconds.
    pub retry_backoff_ms: u64,
}

impl Schedule {
    /// The first cron tick strictly after `after`, if the entry has a cron expression and
    /// the expression has a later tick.
    pub fn next_tick(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron
            .as_ref()
            .and_then(|c| c.find_next_occurrence(&after, false).ok())
    }
}

/// What the runner remembers of one schedule entry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EntryState {
    /// When the entry last fired (`None`: not since [`ScheduleState::since`]).
    pub last_fire: Option<DateTime<Utc>>,
    /// The replication LSN (Postgres LSN as a 64-bit number) the entry's last run built
    /// from (`None`: never ran).
    pub last_lsn: Option<u64>,
}

/// What has happened so far: the runner keeps it, updates it with
/// [`ScheduleState::record`] when it starts a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleState {
    /// When scheduling started: cron ticks at or before it do not fire an entry that
    /// never fired.
    pub since: DateTime<Utc>,
    /// The latest replication LSN known (the lake's progress), if any.
    pub replication_lsn: Option<u64>,
    /// Per entry, by [`Schedule::id`]; a missing entry has fired nothing yet.
    pub entries: BTreeMap<String, EntryState>,
}

impl ScheduleState {
    /// A state starting at `since` with nothing fired.
    pub fn new(since: DateTime<Utc>) -> Self {
        ScheduleState {
            since,
            replication_lsn: None,
            entries: BTreeMap::new(),
        }
    }

    /// Records that `run` started: its entry's `last_fire` becomes `run.at`, and its
    /// `last_lsn` becomes `run.lsn` when that is known. A runner that learns the exact
    /// LSN its build read can overwrite `last_lsn` afterwards.
    pub fn record(&mut self, run: &DueRun) {
        let e = self.entries.entry(run.schedule.clone()).or_default();
        e.last_fire = Some(run.at);
        if run.lsn.is_some() {
            e.last_lsn = run.lsn;
        }
    }
}

/// Why an entry fires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trigger {
    /// A cron tick passed since the last fire (several missed ticks fire once; `tick` is
    /// the latest one passed).
    Cron {
        /// The latest tick at or before now.
        tick: DateTime<Utc>,
    },
    /// Replication moved past the entry's last run.
    ReplicationAdvanced {
        /// The LSN of the last run (`None`: never ran).
        from: Option<u64>,
        /// The replication LSN now.
        to: u64,
    },
}

/// An entry that fires now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueRun {
    /// The entry ([`Schedule::id`]).
    pub schedule: String,
    /// Why (a cron tick wins when both triggers hold).
    pub trigger: Trigger,
    /// Its models in dependency order; the runner skips those already running.
    pub models: Vec<String>,
    /// The time given to [`Schedules::due`].
    pub at: DateTime<Utc>,
    /// The replication LSN known then ([`ScheduleState::replication_lsn`]).
    pub lsn: Option<u64>,
    /// For the runner: the limit of the run, in milliseconds.
    pub timeout_ms: Option<u64>,
    /// For the runner: retries of a failed run.
    pub retries: u32,
    /// For the runner: the pause before the first retry, in milliseconds.
    pub retry_backoff_ms: u64,
}

/// The schedule entries of a project, resolved to models.
#[derive(Debug, Clone)]
pub struct Schedules {
    entries: Vec<Schedule>,
}

struct Label<'a>(usize, &'a ScheduleSpec);

impl fmt::Display for Label<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.1.name {
            Some(n) => write!(f, "schedules[{}] '{n}'", self.0),
            None => write!(f, "schedules[{}] (select '{}')", self.0, self.1.select),
        }
    }
}

fn schedule_error(entry: impl ToString, message: impl Into<String>) -> Error {
    Error::Schedule {
        entry: entry.to_string(),
        message: message.into(),
    }
}

impl Schedules {
    /// Resolves `specs` (disabled ones skipped) and the models' own `schedule` configs.
    ///
    /// Errors name the entry (`schedules[<index>] '<name>'`, or with its `select` when
    /// it has no name; `model '<name>' (<file>)` for a model's config): a cron expression
    /// that does not parse or never matches, an entry with no trigger, a malformed
    /// selection or one selecting no built model, a `min_interval_ms` too large, two
    /// entries with the same name. The first problem found is returned.
    pub fn new(project: &Project, specs: &[ScheduleSpec]) -> Result<Schedules, Error> {
        let mut entries: Vec<Schedule> = Vec::new();
        let mut ids: BTreeMap<String, String> = BTreeMap::new();
        for (i, spec) in specs.iter().enumerate() {
            if !spec.enabled {
                continue;
            }
            let label = Label(i, spec);
            if spec.select.trim().is_empty() {
                return Err(schedule_error(&label, "select is empty"));
            }
            if spec.cron.is_none() && !spec.on_replication_advance {
                return Err(schedule_error(
                    &label,
                    "has no trigger: set cron, on_replication_advance = true, or both",
                ));
            }
            let cron = match &spec.cron {
                Some(text) => Some(
                    parse_cron(text).map_err(|m| schedule_error(&label, format!("cron {m}")))?,
                ),
                None => None,
            };
            let min_interval = i64::try_from(spec.min_interval_ms)
                .ok()
                .and_then(TimeDelta::try_milliseconds)
                .ok_or_else(|| schedule_error(&label, "min_interval_ms is too large"))?;
            let select: Vec<&str> = spec.select.split_whitespace().collect();
            let exclude: Vec<&str> = spec
                .exclude
                .as_deref()
                .map(|e| e.split_whitespace().collect())
                .unwrap_or_default();
            let selection = project.select(&select, &exclude).map_err(|e| {
                let message = match e {
                    Error::Selection { selector, message } => {
                        format!("selector '{selector}': {message}")
                    }
                    other => other.to_string(),
                };
                schedule_error(&label, message)
            })?;
            if selection.models.is_empty() {
                return Err(schedule_error(
                    &label,
                    format!(
                        "select '{}' matches no model that is built (ephemeral models and sources are not built)",
                        spec.select
                    ),
                ));
            }
            let id = spec.name.clone().unwrap_or_else(|| match &spec.exclude {
                Some(ex) if !ex.trim().is_empty() => format!("{} !{}", spec.select, ex.trim()),
                _ => spec.select.clone(),
            });
            if let Some(first) = ids.insert(id.clone(), label.to_string()) {
                return Err(schedule_error(
                    &label,
                    format!("has the name '{id}' of {first} too; give one of them a distinct name"),
                ));
            }
            entries.push(Schedule {
                id,
                origin: ScheduleOrigin::Spec { index: i },
                models: selection.models,
                cron_text: spec.cron.clone(),
                cron,
                on_replication_advance: spec.on_replication_advance,
                min_interval,
                timeout_ms: spec.timeout_ms,
                retries: spec.retries,
                retry_backoff_ms: spec.retry_backoff_ms,
            });
        }
        // model-level schedules, grouped by expression, models in build order
        let mut by_cron: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut seen: BTreeSet<&str> = BTreeSet::new();
        for name in project.order() {
            let Ok(m) = project.model(name) else { continue };
            if m.is_ephemeral() || !seen.insert(name) {
                continue;
            }
            if let Some(text) = &m.config.schedule {
                by_cron
                    .entry(text.trim().to_string())
                    .or_default()
                    .push(name.clone());
            }
        }
        for (text, models) in by_cron {
            let cron = parse_cron(&text).map_err(|msg| {
                let m = project.model(&models[0]).ok();
                let entry = match m {
                    Some(m) => format!("model '{}' ({})", m.name, m.path.display()),
                    None => format!("model '{}'", models[0]),
                };
                schedule_error(entry, format!("schedule {msg}"))
            })?;
            let id = format!("config.schedule '{text}'");
            if let Some(first) = ids.insert(id.clone(), id.clone()) {
                return Err(schedule_error(
                    first,
                    format!("has the name '{id}' that model-level schedules use; rename it"),
                ));
            }
            entries.push(Schedule {
                id,
                origin: ScheduleOrigin::ModelConfig,
                models,
                cron_text: Some(text),
                cron: Some(cron),
                on_replication_advance: false,
                min_interval: TimeDelta::zero(),
                timeout_ms: None,
                retries: 0,
                retry_backoff_ms: default_backoff(),
            });
        }
        Ok(Schedules { entries })
    }

    /// The entries: the specs' in their order, then the model-level ones by expression.
    pub fn entries(&self) -> &[Schedule] {
        &self.entries
    }

    /// The entry `id`.
    pub fn get(&self, id: &str) -> Option<&Schedule> {
        self.entries.iter().find(|e| e.id == id)
    }

    /// The time before which `e` may not fire again (its last fire plus its minimum
    /// interval), if it has fired.
    fn not_before(e: &Schedule, st: Option<&EntryState>) -> Option<DateTime<Utc>> {
        st.and_then(|s| s.last_fire)
            .map(|t| t.checked_add_signed(e.min_interval).unwrap_or(t))
    }

    /// Whether a cron tick passed in (last fire, or `since`; `now`]: the latest such tick.
    fn pending_tick(
        e: &Schedule,
        st: Option<&EntryState>,
        since: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Option<DateTime<Utc>> {
        let from = st.and_then(|s| s.last_fire).unwrap_or(since);
        let first = e.next_tick(from)?;
        if first > now {
            return None;
        }
        // the latest tick at or before now (bounded walk: missed ticks fire once)
        let cron = e.cron.as_ref()?;
        let latest = cron.find_previous_occurrence(&now, true).ok();
        Some(latest.filter(|t| *t >= first).unwrap_or(first))
    }

    /// Whether replication moved past the entry's last run: `(from, to)`.
    fn pending_advance(
        e: &Schedule,
        st: Option<&EntryState>,
        lsn: Option<u64>,
    ) -> Option<(Option<u64>, u64)> {
        if !e.on_replication_advance {
            return None;
        }
        let to = lsn?;
        let from = st.and_then(|s| s.last_lsn);
        match from {
            Some(f) if f >= to => None,
            _ => Some((from, to)),
        }
    }

    /// The entries that fire at `now`, in entry order.
    ///
    /// An entry fires when (a) a tick of its cron expression lies after its last fire
    /// (or after `state.since` if it never fired) and at or before `now`, or (b) it has
    /// `on_replication_advance` and `state.replication_lsn` is greater than its
    /// `last_lsn` (or it never ran) — and in both cases `now` is at least its last fire
    /// plus `min_interval_ms`. A trigger held back by the interval stays pending. Calling
    /// again with the same state gives the same answer: the caller records each run it
    /// starts with [`ScheduleState::record`], which makes the entry's ticks up to `now`
    /// (and the LSN seen) used up, so each tick fires exactly once.
    pub fn due(&self, now: DateTime<Utc>, state: &ScheduleState) -> Vec<DueRun> {
        let mut out = Vec::new();
        for e in &self.entries {
            let st = state.entries.get(&e.id);
            if Self::not_before(e, st).is_some_and(|t| now < t) {
                continue;
            }
            let trigger = if let Some(tick) = Self::pending_tick(e, st, state.since, now) {
                Trigger::Cron { tick }
            } else if let Some((from, to)) = Self::pending_advance(e, st, state.replication_lsn) {
                Trigger::ReplicationAdvanced { from, to }
            } else {
                continue;
            };
            out.push(DueRun {
                schedule: e.id.clone(),
                trigger,
                models: e.models.clone(),
                at: now,
                lsn: state.replication_lsn,
                timeout_ms: e.timeout_ms,
                retries: e.retries,
                retry_backoff_ms: e.retry_backoff_ms,
            });
        }
        out
    }

    /// The earliest time at or after which [`Schedules::due`] may return an entry, given
    /// `state` and no new replication progress: the next cron tick of each entry (not
    /// before its minimum interval has passed) and, for a pending replication advance
    /// held back by the interval, the end of the interval. `now` itself when something is
    /// due already; `None` when nothing will fire without replication moving (no cron
    /// entry, or expressions with no further tick).
    ///
    /// The runner sleeps until then, or until replication advances.
    pub fn next_fire(&self, now: DateTime<Utc>, state: &ScheduleState) -> Option<DateTime<Utc>> {
        let mut best: Option<DateTime<Utc>> = None;
        for e in &self.entries {
            let st = state.entries.get(&e.id);
            let not_before = Self::not_before(e, st);
            let from = st.and_then(|s| s.last_fire).unwrap_or(state.since);
            let mut candidates = Vec::new();
            if let Some(tick) = e.next_tick(from) {
                candidates.push(tick);
            }
            if Self::pending_advance(e, st, state.replication_lsn).is_some() {
                candidates.push(now);
            }
            for c in candidates {
                let at = not_before.map_or(c, |nb| c.max(nb)).max(now);
                best = Some(best.map_or(at, |b| b.min(at)));
            }
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cron_expressions_parse_or_say_why() {
        for ok in [
            "*/10 * * * *",
            "0 3 * * MON-FRI",
            "30 0 3 * * *",
            "@hourly",
            "@daily",
            "@midnight",
            "@weekly",
        ] {
            parse_cron(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        let err = parse_cron("every hour").unwrap_err();
        assert!(err.contains("2 fields"), "{err}");
        let err = parse_cron("0 0 1 1 * 2030").unwrap_err();
        assert!(err.contains("not a cron expression"), "{err}");
        assert!(parse_cron("* * * *").unwrap_err().contains("4 fields"));
        assert!(parse_cron("61 * * * *").is_err());
        assert!(
            parse_cron("@sometimes")
                .unwrap_err()
                .contains("unknown '@sometimes'")
        );
        assert_eq!(
            parse_cron("0 0 30 2 *").unwrap_err(),
            "'0 0 30 2 *' matches no time"
        );
    }
}
