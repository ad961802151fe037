//! The `--ship` transfer on stderr (command layer for `--host`, like `remote/mod.rs`): a bar
//! with bytes and rate on a terminal, a plain line per quarter otherwise (CI logs), and the
//! summary line: bytes sent against the full image, layers, time.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use super::ship::{self, Prepared};
use super::ssh::Session;
use crate::report::duration;

/// The `ship` step of `cutover --host deploy`: prepares, sends with progress, and returns
/// the summary line (a dry run only says it would). `root` is the project dir on the box,
/// `state_dir` the config's (relative ones are under `root`); `stop` is the interrupt flag.
pub fn run(
    session: &mut Session,
    image: &str,
    root: &str,
    state_dir: &std::path::Path,
    dry_run: bool,
    quiet: bool,
    stop: &dyn Fn() -> bool,
) -> anyhow::Result<String> {
    if dry_run {
        return Ok(format!("would send {image} (dry run)"));
    }
    let state_dir = if state_dir.is_absolute() {
        state_dir.display().to_string()
    } else {
        format!("{root}/{}", state_dir.display())
    };
    let prepared = ship::prepare(session, image)?;
    let mut progress = ShipProgress::new(&prepared, quiet);
    let result = ship::send(
        session,
        &prepared,
        &state_dir,
        &mut |n| progress.sent(n),
        stop,
    );
    progress.clear();
    let sent = result?;
    Ok(ShipProgress::summary(&prepared, sent.took))
}

/// Bytes as people read them: `1.3 MB`, `812 kB`, `96 B`.
pub fn bytes(n: u64) -> String {
    match n {
        n if n >= 1_000_000_000 => format!("{:.2} GB", n as f64 / 1e9),
        n if n >= 1_000_000 => format!("{:.1} MB", n as f64 / 1e6),
        n if n >= 1_000 => format!("{:.0} kB", n as f64 / 1e3),
        n => format!("{n} B"),
    }
}

pub struct ShipProgress {
    total: u64,
    quiet: bool,
    bar: Option<indicatif::ProgressBar>,
    next_quarter: u64,
    started: Instant,
}

impl ShipProgress {
    pub fn new(prepared: &Prepared, quiet: bool) -> ShipProgress {
        let total = prepared.filtered.size;
        let bar = (!quiet && std::io::stderr().is_terminal()).then(|| {
            let bar = indicatif::ProgressBar::new(total);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "  ⠿ ship         {bar:30} {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            bar
        });
        ShipProgress {
            total,
            quiet,
            bar,
            next_quarter: 1,
            started: Instant::now(),
        }
    }

    pub fn sent(&mut self, sent: u64) {
        if let Some(bar) = &self.bar {
            bar.set_position(sent);
            return;
        }
        if self.quiet || self.total == 0 {
            return;
        }
        while self.next_quarter <= 3 && sent * 4 >= self.total * self.next_quarter {
            let secs = self.started.elapsed().as_secs_f64().max(1e-3);
            eprintln!(
                "    ship {:>3}%  {} of {}  {}/s",
                self.next_quarter * 25,
                bytes(sent),
                bytes(self.total),
                bytes((sent as f64 / secs) as u64)
            );
            self.next_quarter += 1;
        }
    }

    pub fn clear(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }

    /// `app:v2: sent 1.0 MB (1024512 bytes) of 2.3 MB (2345984 bytes, a full docker save); 1 of
    /// 2 layers, the box had 1; 0.4s, 2.6 MB/s` (exact counts for scripts and benchmarks)
    pub fn summary(prepared: &Prepared, took: Duration) -> String {
        let f = &prepared.filtered;
        let had = match f.layers - f.layers_sent {
            0 => "the box had none".to_string(),
            n if n == f.layers => "the box had them all".to_string(),
            n => format!("the box had {n}"),
        };
        format!(
            "{}: sent {} ({} bytes) of {} ({} bytes, a full docker save); {} of {} layers, \
             {had}; {}, {}/s",
            prepared.image,
            bytes(f.size),
            f.size,
            bytes(prepared.full_size),
            prepared.full_size,
            f.layers_sent,
            f.layers,
            duration(took),
            bytes((f.size as f64 / took.as_secs_f64().max(1e-3)) as u64),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_counts_read_as_people_read_them() {
        assert_eq!(bytes(96), "96 B");
        assert_eq!(bytes(812_400), "812 kB");
        assert_eq!(bytes(1_331_200), "1.3 MB");
        assert_eq!(bytes(2_500_000_000), "2.50 GB");
    }
}
