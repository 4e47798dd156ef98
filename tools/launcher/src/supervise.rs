//! Keeping the pipeline's processes running: what `comps up` does when one of them exits.
//!
//! With `--restart no` (the default) any exit stops the whole pipeline, as before. With
//! `--restart on-failure` (Docker's and compose's name for it) a process that fails (a non-zero
//! exit code or a signal) is started again with the same command on the same address, so the
//! processes that call it need no change:
//!
//! - after `--restart-delay-secs`, doubled for each failure in a row (at most
//!   [`MAX_DELAY`]), the way Kubernetes backs off a crash loop;
//! - a process that stays healthy for [`RESET_AFTER`] starts its count afresh;
//! - after `--max-restarts` failures in a row (or one that exits 0, which is not a failure)
//!   the pipeline stops, as with `--restart no`;
//! - a restarted process counts as back only when its health check answers 200 (a restart that
//!   does not within the start timeout is killed and counts as another failure).

use std::process::ExitStatus;
use std::time::{Duration, Instant};

use crate::proc::Proc;

/// The longest wait before a restart.
pub const MAX_DELAY: Duration = Duration::from_secs(60);

/// How long a restarted process must stay healthy before its failures are forgotten.
pub const RESET_AFTER: Duration = Duration::from_secs(60);

/// How long one health probe of a restarting process may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// What to do when a process exits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RestartPolicy {
    /// Stop the whole pipeline.
    No,
    /// Start it again when it failed (non-zero exit or a signal); an exit with 0 stops all.
    OnFailure,
}

/// The restart settings.
#[derive(Debug, Clone, Copy)]
pub struct Restart {
    /// The policy.
    pub policy: RestartPolicy,
    /// The first wait before a restart.
    pub delay: Duration,
    /// Failures in a row after which the pipeline stops.
    pub max_in_a_row: u32,
    /// How long a restarted process may take to answer its health check.
    pub start_timeout: Duration,
}

/// What happened to one process during a [`Supervisor::tick`].
#[derive(Debug)]
pub enum Event {
    /// It failed and will be started again after `delay`.
    Failed {
        /// The process.
        name: String,
        /// Why (its exit status, or a restart that did not come up).
        why: String,
        /// The wait before the restart.
        delay: Duration,
        /// Which restart this will be, counting failures in a row.
        attempt: u32,
    },
    /// A restart answers its health check again.
    Back {
        /// The process.
        name: String,
        /// Where it listens.
        url: String,
        /// Its pid.
        pid: u32,
    },
    /// It exited and will not be started again: the pipeline must stop.
    Fatal {
        /// The process.
        name: String,
        /// Why.
        why: String,
    },
}

#[derive(Debug)]
enum State {
    Running { healthy_since: Instant },
    Waiting { until: Instant },
    Starting { since: Instant },
}

#[derive(Debug)]
struct Watch {
    state: State,
    in_a_row: u32,
}

/// Watches a set of processes (the pipeline's, by index) and restarts them by its policy.
#[derive(Debug)]
pub struct Supervisor {
    restart: Restart,
    watches: Vec<Watch>,
}

impl Supervisor {
    /// Watch `n` processes, all running and healthy now.
    pub fn new(restart: Restart, n: usize) -> Self {
        let now = Instant::now();
        let watches = (0..n).map(|_| Watch { state: State::Running { healthy_since: now }, in_a_row: 0 }).collect();
        Self { restart, watches }
    }

    /// Look at every process once; restart what the policy says. Never waits longer than one
    /// health probe per restarting process.
    pub async fn tick(&mut self, procs: &mut [Proc]) -> Vec<Event> {
        let mut events = Vec::new();
        for (proc, watch) in procs.iter_mut().zip(self.watches.iter_mut()) {
            if let Some(event) = step(&self.restart, proc, watch).await {
                events.push(event);
            }
        }
        events
    }
}

async fn step(restart: &Restart, proc: &mut Proc, watch: &mut Watch) -> Option<Event> {
    let now = Instant::now();
    match watch.state {
        State::Running { healthy_since } => {
            let status = proc.exited()?;
            if healthy_since.elapsed() >= RESET_AFTER {
                watch.in_a_row = 0;
            }
            Some(failed(restart, proc, watch, status_text(status), status.success()))
        }
        State::Waiting { until } => {
            if now < until {
                return None;
            }
            match proc.respawn() {
                Ok(p) => {
                    *proc = p;
                    watch.state = State::Starting { since: now };
                    None
                }
                Err(e) => Some(Event::Fatal { name: proc.name.clone(), why: e.to_string() }),
            }
        }
        State::Starting { since } => {
            if let Some(status) = proc.exited() {
                return Some(failed(restart, proc, watch, format!("{} while restarting", status_text(status)), false));
            }
            if since.elapsed() > restart.start_timeout {
                proc.kill();
                let why = format!("not healthy within {:?} of its restart", restart.start_timeout);
                return Some(failed(restart, proc, watch, why, false));
            }
            proc.poll_listening()?;
            if !proc.is_healthy(PROBE_TIMEOUT).await {
                return None;
            }
            watch.state = State::Running { healthy_since: Instant::now() };
            Some(Event::Back { name: proc.name.clone(), url: proc.url().unwrap_or_default(), pid: proc.pid() })
        }
    }
}

/// A failure: schedule the restart the policy allows, or say the pipeline must stop.
fn failed(restart: &Restart, proc: &Proc, watch: &mut Watch, why: String, clean_exit: bool) -> Event {
    let name = proc.name.clone();
    if restart.policy == RestartPolicy::No || clean_exit {
        return Event::Fatal { name, why };
    }
    if watch.in_a_row >= restart.max_in_a_row {
        let why = format!("{why}; {} restarts in a row failed, giving up", watch.in_a_row);
        return Event::Fatal { name, why };
    }
    let delay = backoff(restart.delay, watch.in_a_row);
    watch.in_a_row += 1;
    watch.state = State::Waiting { until: Instant::now() + delay };
    Event::Failed { name, why, delay, attempt: watch.in_a_row }
}

/// `first` doubled `in_a_row` times, at most [`MAX_DELAY`].
fn backoff(first: Duration, in_a_row: u32) -> Duration {
    first.saturating_mul(1u32.checked_shl(in_a_row).unwrap_or(u32::MAX)).min(MAX_DELAY)
}

fn status_text(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with code {code}"),
        (None, Some(sig)) => {
            let name = nix::sys::signal::Signal::try_from(sig).map(|s| s.as_str()).unwrap_or("an unknown signal");
            format!("killed by {name}")
        }
        _ => format!("ended ({status})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proc::{ProcSpec, script};

    fn restart(policy: RestartPolicy, max_in_a_row: u32) -> Restart {
        Restart { policy, delay: Duration::from_millis(20), max_in_a_row, start_timeout: Duration::from_secs(10) }
    }

    /// Tick until the supervisor reports something final (or 10 s pass); every event seen.
    async fn run(sup: &mut Supervisor, procs: &mut [Proc]) -> Vec<Event> {
        let mut seen = Vec::new();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            let events = sup.tick(procs).await;
            let last = events.iter().any(|e| matches!(e, Event::Fatal { .. } | Event::Back { .. }));
            seen.extend(events);
            if last {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        seen
    }

    #[tokio::test]
    async fn a_process_that_keeps_failing_is_retried_then_given_up() {
        let log = std::env::temp_dir().join(format!("comps-launcher-{}-crash.log", std::process::id()));
        let spec = ProcSpec::new("crashy", script("crashy", "echo started; exit 3")).log_file(&log);
        let mut procs = vec![Proc::spawn(&spec).unwrap()];
        let mut sup = Supervisor::new(restart(RestartPolicy::OnFailure, 2), 1);
        let events = run(&mut sup, &mut procs).await;
        let failed: Vec<u32> = events
            .iter()
            .filter_map(|e| if let Event::Failed { attempt, .. } = e { Some(*attempt) } else { None })
            .collect();
        assert_eq!(failed, [1, 2], "{events:?}");
        match events.last() {
            Some(Event::Fatal { name, why }) => {
                assert_eq!(name, "crashy");
                assert!(why.contains("exited with code 3") && why.contains("2 restarts in a row failed"), "{why}");
            }
            other => panic!("not given up: {other:?}"),
        }
        assert_eq!(procs[0].restarts, 2);
        std::thread::sleep(Duration::from_millis(200));
        let written = std::fs::read_to_string(&log).unwrap();
        assert_eq!(written.matches("started").count(), 3, "a restart appends to the log: {written}");
    }

    #[tokio::test]
    async fn a_clean_exit_or_the_no_policy_stops_the_pipeline() {
        for (policy, body, says) in [
            (RestartPolicy::OnFailure, "exit 0", "exited with code 0"),
            (RestartPolicy::No, "kill -9 $$", "killed by SIGKILL"),
        ] {
            let mut procs = vec![Proc::spawn(&ProcSpec::new("one", script("once", body))).unwrap()];
            let mut sup = Supervisor::new(restart(policy, 5), 1);
            let events = run(&mut sup, &mut procs).await;
            assert!(
                matches!(&events[..], [Event::Fatal { why, .. }] if why.contains(says)),
                "{policy:?} {body}: {events:?}"
            );
            assert_eq!(procs[0].restarts, 0);
        }
    }

    #[test]
    fn the_wait_doubles_and_is_capped() {
        let s = Duration::from_secs;
        assert_eq!(backoff(s(1), 0), s(1));
        assert_eq!(backoff(s(1), 3), s(8));
        assert_eq!(backoff(s(2), 5), s(60), "64 s is capped at MAX_DELAY");
        assert_eq!(backoff(s(1), 40), MAX_DELAY, "no overflow");
    }
}
