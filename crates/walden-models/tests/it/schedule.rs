//! The schedule planner: entries resolved to models, cron ticks, replication advances.

use chrono::{DateTime, TimeZone, Utc};
use walden_models::{Error, ScheduleOrigin, ScheduleSpec, ScheduleState, Schedules, Trigger};

use crate::common::*;

fn t(h: u32, m: u32, s: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 3, 14, h, m, s).unwrap()
}

fn spec_toml(text: &str) -> Vec<ScheduleSpec> {
    #[derive(serde::Deserialize)]
    struct File {
        schedules: Vec<ScheduleSpec>,
    }
    let f: File = serde_norway::from_str(text).unwrap();
    f.schedules
}

fn error_of(specs: &[ScheduleSpec]) -> String {
    match Schedules::new(&shop(), specs) {
        Ok(_) => panic!("the schedules were accepted"),
        Err(e @ Error::Schedule { .. }) => e.to_string(),
        Err(other) => panic!("unexpected error kind: {other}"),
    }
}

#[test]
fn model_level_schedules_come_from_folder_yaml_and_config() {
    let p = shop();
    let s = Schedules::new(&p, &[]).unwrap();
    let entries: Vec<(&str, &[String])> = s
        .entries()
        .iter()
        .map(|e| (e.id.as_str(), e.models.as_slice()))
        .collect();
    assert_eq!(
        entries,
        [
            // SQL config(schedule=...) overrides the folder's
            (
                "config.schedule '*/15 * * * *'",
                &["fct_order_lines".to_string()][..]
            ),
            // the folder's +schedule, models in build order
            (
                "config.schedule '0 * * * *'",
                &["fct_orders".to_string(), "dim_customers".to_string()][..]
            ),
        ]
    );
    assert!(
        s.entries()
            .iter()
            .all(|e| e.origin == ScheduleOrigin::ModelConfig)
    );

    // a schedule set in YAML config: (not only folders and config())
    let dir = write(&[
        ("walden_project.yml", "name: p\n"),
        ("models/a.sql", "select 1 as x"),
        ("models/b.sql", "select * from {{ ref('a') }}"),
        (
            "models/props.yml",
            "version: 2\nmodels:\n  - name: b\n    config:\n      schedule: '@daily'\n",
        ),
    ]);
    let p = load(dir.path());
    let s = Schedules::new(&p, &[]).unwrap();
    assert_eq!(s.entries().len(), 1);
    assert_eq!(s.entries()[0].models, ["b"]);
    assert_eq!(
        s.entries()[0].next_tick(t(10, 0, 0)),
        Some(Utc.with_ymd_and_hms(2025, 3, 15, 0, 0, 0).unwrap())
    );
}

#[test]
fn specs_resolve_selections_in_dag_order() {
    let specs = spec_toml(
        r#"
schedules:
  - select: "tag:marts"
    cron: "0 3 * * *"
    retries: 2
    retry_backoff_ms: 500
    timeout_ms: 60000
  - name: staging-and-after
    select: "path:staging+"
    exclude: "fct_order_lines"
    on_replication_advance: true
    min_interval_ms: 30000
  - name: one-model-and-parents
    select: "+fct_orders"
    cron: "@hourly"
"#,
    );
    let s = Schedules::new(&shop(), &specs).unwrap();
    let ids: Vec<&str> = s.entries().iter().map(|e| e.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "tag:marts",
            "staging-and-after",
            "one-model-and-parents",
            "config.schedule '*/15 * * * *'",
            "config.schedule '0 * * * *'"
        ]
    );
    let marts = s.get("tag:marts").unwrap();
    assert_eq!(
        marts.models,
        ["fct_order_lines", "fct_orders", "dim_customers"]
    );
    assert_eq!(
        (marts.retries, marts.retry_backoff_ms, marts.timeout_ms),
        (2, 500, Some(60000))
    );
    assert_eq!(marts.origin, ScheduleOrigin::Spec { index: 0 });
    // ephemeral models are never scheduled; the exclude applies
    assert_eq!(
        s.get("staging-and-after").unwrap().models,
        [
            "stg_customers",
            "stg_order_lines",
            "stg_orders",
            "fct_orders",
            "dim_customers"
        ]
    );
    assert_eq!(
        s.get("one-model-and-parents").unwrap().models,
        ["stg_order_lines", "stg_orders", "fct_orders"]
    );
}

#[test]
fn invalid_entries_are_named() {
    let err = error_of(&[
        ScheduleSpec::cron("tag:marts", "0 3 * * *"),
        ScheduleSpec::cron("tag:staging", "every night"),
    ]);
    assert_eq!(
        err,
        "schedules[1] (select 'tag:staging'): cron 'every night' is not a cron expression (2 fields); expected 5 fields like '*/10 * * * *', 6 with seconds first, or @hourly/@daily/@weekly/@monthly/@yearly"
    );
    let mut named = ScheduleSpec::cron("tag:marts", "99 * * * *");
    named.name = Some("nightly".into());
    let err = error_of(&[named]);
    assert!(
        err.starts_with("schedules[0] 'nightly': cron '99 * * * *' is not a cron expression ("),
        "{err}"
    );
    let err = error_of(&[ScheduleSpec::cron("tag:marts", "0 0 31 2 *")]);
    assert_eq!(
        err,
        "schedules[0] (select 'tag:marts'): cron '0 0 31 2 *' matches no time"
    );

    let err = error_of(&[ScheduleSpec::cron("tag:mart", "@daily")]);
    assert!(
        err.starts_with("schedules[0] (select 'tag:mart'): selector 'tag:mart': "),
        "{err}"
    );
    let err = error_of(&[ScheduleSpec::cron("fct_order+lines", "@daily")]);
    assert!(
        err.starts_with("schedules[0] (select 'fct_order+lines'): selector"),
        "{err}"
    );
    let err = error_of(&[ScheduleSpec::cron("int_order_totals", "@daily")]);
    assert_eq!(
        err,
        "schedules[0] (select 'int_order_totals'): select 'int_order_totals' matches no model that is built (ephemeral models and sources are not built)"
    );

    let mut no_trigger = ScheduleSpec::cron("tag:marts", "x");
    no_trigger.cron = None;
    assert_eq!(
        error_of(&[no_trigger]),
        "schedules[0] (select 'tag:marts'): has no trigger: set cron, on_replication_advance = true, or both"
    );
    let err = error_of(&[
        ScheduleSpec::cron("tag:marts", "@daily"),
        ScheduleSpec::cron("tag:marts", "@hourly"),
    ]);
    assert!(
        err.starts_with(
            "schedules[1] (select 'tag:marts'): has the name 'tag:marts' of schedules[0]"
        ),
        "{err}"
    );
    // a disabled entry is not checked
    let mut off = ScheduleSpec::cron("nothing_like_this", "nonsense");
    off.enabled = false;
    assert!(Schedules::new(&shop(), &[off]).is_ok());

    // unknown keys in the configuration are refused by serde
    let bad: Result<ScheduleSpec, _> =
        serde_norway::from_str("select: a\ncron: '@daily'\nretrys: 3\n");
    assert!(
        bad.unwrap_err()
            .to_string()
            .contains("unknown field `retrys`")
    );
}

#[test]
fn a_bad_model_schedule_is_refused_at_load_with_its_file() {
    let errs = errors(&[
        (
            "walden_project.yml",
            "name: p\nmodels:\n  p:\n    +schedule: '0 0 30 2 *'\n",
        ),
        ("models/a.sql", "select 1"),
    ]);
    assert_eq!(
        errs,
        ["walden_project.yml:4:5: schedule '0 0 30 2 *' matches no time (under models:.p)"]
    );
}

#[test]
fn ticks_fire_exactly_once_per_period() {
    let s = Schedules::new(&shop(), &[ScheduleSpec::cron("fct_orders", "*/10 * * * *")]).unwrap();
    let mut state = ScheduleState::new(t(9, 58, 0));
    let only_spec = |runs: Vec<walden_models::DueRun>| -> Vec<walden_models::DueRun> {
        runs.into_iter()
            .filter(|r| r.schedule == "fct_orders")
            .collect()
    };
    // no tick passed yet
    assert!(only_spec(s.due(t(9, 59, 59), &state)).is_empty());
    // the 10:00 tick: fires once, however often we ask within the period
    let mut fired = Vec::new();
    let mut now = t(10, 0, 0);
    while now < t(10, 35, 0) {
        for run in only_spec(s.due(now, &state)) {
            fired.push((now, run.trigger.clone()));
            assert_eq!(run.models, ["fct_orders"]);
            state.record(&run);
        }
        now += chrono::TimeDelta::seconds(7);
    }
    let ticks: Vec<DateTime<Utc>> = fired
        .iter()
        .map(|(_, tr)| match tr {
            Trigger::Cron { tick } => *tick,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        ticks,
        [t(10, 0, 0), t(10, 10, 0), t(10, 20, 0), t(10, 30, 0)]
    );
    // missed ticks fire once, naming the latest one
    let late = only_spec(s.due(t(11, 5, 0), &state));
    assert_eq!(late.len(), 1);
    assert_eq!(late[0].trigger, Trigger::Cron { tick: t(11, 0, 0) });
    state.record(&late[0]);
    assert!(only_spec(s.due(t(11, 9, 59), &state)).is_empty());

    // next_fire tells how long to sleep: the earliest next tick of any entry
    for e in s.entries().iter().filter(|e| e.id != "fct_orders") {
        state.entries.entry(e.id.clone()).or_default().last_fire = Some(t(11, 5, 0));
    }
    assert_eq!(s.next_fire(t(11, 6, 0), &state), Some(t(11, 10, 0)));
    // ... now, when something is due (the model-level entries never fired)
    assert_eq!(
        s.next_fire(t(11, 6, 0), &ScheduleState::new(t(9, 0, 0))),
        Some(t(11, 6, 0))
    );
}

#[test]
fn replication_advance_fires_with_a_minimum_interval() {
    let mut spec = ScheduleSpec::cron("stg_orders+", "x");
    spec.cron = None;
    spec.name = Some("fresh".into());
    spec.on_replication_advance = true;
    spec.min_interval_ms = 60_000;
    let s = Schedules::new(&shop(), &[spec]).unwrap();
    let fresh = |runs: Vec<walden_models::DueRun>| -> Vec<walden_models::DueRun> {
        runs.into_iter().filter(|r| r.schedule == "fresh").collect()
    };
    let mut state = ScheduleState::new(t(10, 0, 0));
    // nothing known about replication: nothing to do
    assert!(fresh(s.due(t(10, 0, 1), &state)).is_empty());
    state.replication_lsn = Some(100);
    let runs = fresh(s.due(t(10, 0, 2), &state));
    assert_eq!(runs.len(), 1);
    assert_eq!(
        runs[0].trigger,
        Trigger::ReplicationAdvanced {
            from: None,
            to: 100
        }
    );
    assert_eq!(
        runs[0].models,
        [
            "stg_orders",
            "fct_order_lines",
            "fct_orders",
            "dim_customers"
        ]
    );
    state.record(&runs[0]);
    assert_eq!(state.entries["fresh"].last_lsn, Some(100));
    // no advance: nothing
    assert!(fresh(s.due(t(10, 5, 0), &state)).is_empty());
    assert_eq!(s.get("fresh").unwrap().next_tick(t(10, 5, 0)), None);
    // an advance within the interval waits, and next_fire says until when
    state.replication_lsn = Some(150);
    assert!(fresh(s.due(t(10, 0, 30), &state)).is_empty());
    let model_level_only = {
        let mut st = state.clone();
        st.replication_lsn = Some(100);
        s.next_fire(t(10, 0, 30), &st)
    };
    assert_eq!(
        model_level_only,
        Some(t(10, 15, 0)),
        "the next model-level tick"
    );
    let mut quiet = state.clone();
    for e in s.entries() {
        if e.id != "fresh" {
            quiet.entries.entry(e.id.clone()).or_default().last_fire = Some(t(10, 0, 30));
        }
    }
    assert_eq!(s.next_fire(t(10, 0, 30), &quiet), Some(t(10, 1, 2)));
    // once the interval has passed, it fires from the last LSN to the new one
    let runs = fresh(s.due(t(10, 1, 2), &state));
    assert_eq!(
        runs[0].trigger,
        Trigger::ReplicationAdvanced {
            from: Some(100),
            to: 150
        }
    );
    state.record(&runs[0]);
    // the runner overwrites the LSN its build actually read; advances beyond it fire
    state.entries.get_mut("fresh").unwrap().last_lsn = Some(160);
    state.replication_lsn = Some(160);
    assert!(fresh(s.due(t(10, 9, 0), &state)).is_empty());
    state.replication_lsn = Some(161);
    assert_eq!(fresh(s.due(t(10, 9, 0), &state)).len(), 1);
}

#[test]
fn cron_and_replication_on_one_entry_and_seconds_fields() {
    let mut spec = ScheduleSpec::cron("dim_customers", "30 */5 * * * *");
    spec.on_replication_advance = true;
    let s = Schedules::new(&shop(), &[spec]).unwrap();
    let mut state = ScheduleState::new(t(10, 0, 0));
    state.replication_lsn = Some(7);
    let run = s
        .due(t(10, 5, 30), &state)
        .into_iter()
        .find(|r| r.schedule == "dim_customers")
        .unwrap();
    // both hold: the cron tick is named
    assert_eq!(run.trigger, Trigger::Cron { tick: t(10, 5, 30) });
    assert_eq!(run.lsn, Some(7));
    state.record(&run);
    assert_eq!(state.entries["dim_customers"].last_lsn, Some(7));
    assert!(
        s.due(t(10, 5, 31), &state)
            .iter()
            .all(|r| r.schedule != "dim_customers")
    );
}
