//! Clocks and statistics: the CPU time of the calling thread, a real clock that can skip idle waits, and
//! min / median / max of repeated runs.

use std::time::{Duration, Instant};

/// CPU time consumed by the calling thread so far.
///
/// Read from the thread's CPU clock (`clock_gettime(CLOCK_THREAD_CPUTIME_ID)`, nanoseconds). Every
/// workload runs both engines in this one thread, so thread CPU time is the cost of the engines plus the
/// harness, with no waiting counted. (`/proc/thread-self/schedstat` reads 0 where the kernel keeps no
/// scheduler statistics, and the ticks of `/proc/thread-self/stat` are 10 ms: 4% of a 256 MiB run.)
pub fn thread_cpu() -> Duration {
    cpu_clock(libc::CLOCK_THREAD_CPUTIME_ID, "/proc/thread-self/stat")
}

/// CPU time consumed by the whole process so far (every thread, live or ended; user + system).
///
/// Read from the process CPU clock (`clock_gettime(CLOCK_PROCESS_CPUTIME_ID)`, nanoseconds), falling back
/// to the 10 ms ticks of `/proc/self/stat`: for the `udp` workload, whose work is spread over two threads
/// (and, for quinn, its runtime), so the calling thread's time would miss the other side.
pub fn process_cpu() -> Duration {
    cpu_clock(libc::CLOCK_PROCESS_CPUTIME_ID, "/proc/self/stat")
}

/// The CPU clock `clock` (nanoseconds), or, should it fail, the user + system ticks of the `stat` file.
fn cpu_clock(clock: libc::clockid_t, stat: &str) -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the call's duration.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::clock_gettime(clock, &mut ts) };
    if rc == 0 {
        return Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32);
    }
    let stat = std::fs::read_to_string(stat).unwrap_or_else(|e| panic!("Linux {stat}: {e}"));
    stat_ticks(&stat)
}

/// utime + stime of a `/proc/.../stat` line, as a duration of 10 ms ticks.
fn stat_ticks(stat: &str) -> Duration {
    // Fields after the command name (which is in parentheses and may hold spaces); utime and stime are
    // fields 14 and 15 of the line, 12 and 13 after the closing parenthesis.
    let rest = &stat[stat.rfind(')').expect("stat has a command name") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap_or(0) + fields[12].parse::<u64>().unwrap_or(0);
    Duration::from_millis(ticks * 10)
}

/// Runs `f` and returns its result with the thread CPU time it took.
pub fn cpu_timed<R>(f: impl FnOnce() -> R) -> (R, Duration) {
    let start = thread_cpu();
    let r = f();
    (r, thread_cpu() - start)
}

/// The real clock, read once per driver round, as a sans-IO driver would.
#[allow(clippy::disallowed_methods)]
pub fn real_now() -> Instant {
    // The benchmark is the I/O edge: it owns the clock, like a UDP driver would.
    Instant::now()
}

/// A clock for in-memory transfers: real time, plus the waits a driver would have slept through.
///
/// When neither engine has anything to send, a real driver sleeps until the next deadline; the benchmark
/// jumps over that wait instead, so no CPU is burnt and none is counted.
#[derive(Debug)]
pub struct SkipClock {
    skipped: Duration,
}

impl SkipClock {
    pub fn new() -> Self {
        Self {
            skipped: Duration::ZERO,
        }
    }

    pub fn now(&self) -> Instant {
        real_now() + self.skipped
    }

    /// Moves the clock to `deadline` if it lies ahead.
    pub fn skip_to(&mut self, deadline: Instant) {
        let now = self.now();
        if deadline > now {
            self.skipped += deadline - now;
        }
    }
}

/// Min, median and max of a set of samples.
#[derive(Debug, Clone, Copy)]
pub struct Stats {
    pub min: f64,
    pub median: f64,
    pub max: f64,
}

impl Stats {
    pub fn of(samples: &[f64]) -> Stats {
        assert!(!samples.is_empty(), "at least one sample");
        let mut v = samples.to_vec();
        v.sort_by(|a, b| a.total_cmp(b));
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Stats {
            min: v[0],
            median,
            max: v[n - 1],
        }
    }
}
