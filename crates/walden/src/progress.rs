//! Progress bars for the initial copy.

use std::collections::HashMap;
use std::sync::Mutex;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use walden_replicate::SyncObserver;

pub struct Bars {
    multi: MultiProgress,
    bars: Mutex<HashMap<String, ProgressBar>>,
    commit: Mutex<Option<ProgressBar>>,
}

impl Default for Bars {
    /// Bars on stderr when it is a terminal; hidden otherwise (CI, pipes).
    fn default() -> Self {
        let multi = MultiProgress::new();
        if !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            multi.set_draw_target(ProgressDrawTarget::hidden());
        }
        Self {
            multi,
            bars: Mutex::new(HashMap::new()),
            commit: Mutex::new(None),
        }
    }
}

impl SyncObserver for Bars {
    fn table_started(&self, table: &str, estimated_rows: u64) {
        let bar = self.multi.add(ProgressBar::new(estimated_rows.max(1)));
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix:<28} {bar:30} {human_pos:>11}/~{human_len:<11} rows {elapsed:>4} {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.set_prefix(table.to_string());
        self.bars
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(table.to_string(), bar);
    }

    fn rows_copied(&self, table: &str, rows: u64) {
        if let Some(bar) = self
            .bars
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(table)
        {
            bar.inc(rows);
            if bar.position() > bar.length().unwrap_or(0) {
                bar.set_length(bar.position());
            }
        }
    }

    fn table_copied(&self, table: &str, rows: u64) {
        if let Some(bar) = self
            .bars
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(table)
        {
            bar.set_length(rows.max(1));
            bar.set_position(rows);
            bar.finish_with_message("copied");
        }
    }

    fn committing(&self) {
        let bar = self.multi.add(ProgressBar::new_spinner());
        bar.set_message("committing to the lake");
        bar.enable_steady_tick(std::time::Duration::from_millis(120));
        *self.commit.lock().unwrap_or_else(|p| p.into_inner()) = Some(bar);
    }
}

impl Drop for Bars {
    fn drop(&mut self) {
        if let Some(bar) = self.commit.lock().unwrap_or_else(|p| p.into_inner()).take() {
            bar.finish_and_clear();
        }
    }
}
