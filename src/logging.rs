//! The daemon's log: one line per record to stderr, in UTC
//! (`2026-12-06T03:25:52.123Z INFO  [meshfwd::runtime] text`).
//!
//! A log line that cannot be written (a full disk behind `2>file`, a closed
//! pipe, a restarting journald) is counted in [`lost_lines`] and otherwise
//! ignored: logging must never stop forwarding. `eprintln!`, which the
//! generic loggers use, panics on a failed write, and with `panic = "abort"`
//! that killed the daemon with SIGABRT (issue #19).
//!
//! Never called per packet: the workers only count.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

static LOST: AtomicU64 = AtomicU64::new(0);

/// Log lines that could not be written to stderr since start.
pub fn lost_lines() -> u64 {
    LOST.load(Ordering::Relaxed)
}

struct StderrLogger;

static LOGGER: StderrLogger = StderrLogger;

/// Installs the logger (once; later calls only change the level).
pub fn init(level: log::LevelFilter) {
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(level);
}

impl log::Log for StderrLogger {
    fn enabled(&self, m: &log::Metadata) -> bool {
        m.level() <= log::max_level()
    }

    fn log(&self, r: &log::Record) {
        if !self.enabled(r.metadata()) {
            return;
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let mut line = String::with_capacity(160);
        let _ = writeln!(
            line,
            "{} {:<5} [{}] {}",
            utc_timestamp(now.as_secs(), now.subsec_millis()),
            r.level(),
            r.target(),
            r.args()
        );
        write_line(&mut std::io::stderr().lock(), &line);
    }

    fn flush(&self) {}
}

/// Writes one whole line; a failure is counted, never raised.
fn write_line(out: &mut impl std::io::Write, line: &str) {
    if out.write_all(line.as_bytes()).is_err() {
        LOST.fetch_add(1, Ordering::Relaxed);
    }
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` for `secs` since the Unix epoch.
fn utc_timestamp(secs: u64, millis: u32) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Proleptic Gregorian date of a day count since 1970-01-01 (Howard
/// Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_utc_calendar_dates() {
        assert_eq!(utc_timestamp(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(utc_timestamp(951_782_400, 7), "2000-02-29T00:00:00.007Z");
        assert_eq!(
            utc_timestamp(1_796_527_552, 123),
            "2026-12-06T03:25:52.123Z"
        );
        assert_eq!(
            utc_timestamp(4_107_542_399, 999),
            "2100-02-28T23:59:59.999Z"
        );
    }

    /// A writer that always fails, like stderr on /dev/full or a closed pipe.
    struct Full;
    impl std::io::Write for Full {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::Error::from_raw_os_error(libc::ENOSPC))
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_failed_write_is_counted_not_raised() {
        let before = lost_lines();
        write_line(&mut Full, "x\n");
        write_line(&mut Full, "y\n");
        assert!(lost_lines() >= before + 2);
        let mut ok = Vec::new();
        write_line(&mut ok, "z\n");
        assert_eq!(ok, b"z\n");
    }
}
