//! The one kind of thread a model runs on. A batcher's worker and the LLM engine's scheduler
//! are both a [`spawn_worker`]: a named thread whose loop runs on the model's compute pool
//! ([`crate::compute_pool`]), that runs each model step through [`WorkerHealth::guard`] (a
//! panic fails that step, is logged and counted, and the loop goes on) and that publishes its
//! health for the service's `/health`: failing once the thread has stopped, or while the
//! model's last [`BATCHER_UNHEALTHY_AFTER_PANICS`] steps all panicked.

use std::any::Any;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use comps_core::health::HealthCheck;
use comps_core::limits::BATCHER_UNHEALTHY_AFTER_PANICS;

/// What a worker publishes about itself.
#[derive(Debug)]
pub struct WorkerHealth {
    name: Arc<str>,
    /// Set when the worker thread has ended, whether it returned or unwound.
    stopped: AtomicBool,
    /// Steps in a row whose compute panicked; 0 after one that did not.
    consecutive_panics: AtomicU32,
    /// Steps whose compute panicked, in all.
    panics: AtomicU64,
}

impl WorkerHealth {
    fn new(name: &str) -> Self {
        Self {
            name: Arc::from(name),
            stopped: AtomicBool::new(false),
            consecutive_panics: AtomicU32::new(0),
            panics: AtomicU64::new(0),
        }
    }

    /// The model's name, as its errors and logs call it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Run one model step. A panic inside it (an input a kernel cannot take, a bug) does not
    /// take the thread down: it is logged with `what` and counted, and comes back as the
    /// panic's message. The step's state is the caller's to discard.
    pub fn guard<R>(&self, what: &str, step: impl FnOnce() -> R) -> Result<R, String> {
        match std::panic::catch_unwind(AssertUnwindSafe(step)) {
            Ok(r) => {
                self.consecutive_panics.store(0, Ordering::SeqCst);
                Ok(r)
            }
            Err(payload) => {
                self.panics.fetch_add(1, Ordering::Relaxed);
                let in_a_row = self.consecutive_panics.fetch_add(1, Ordering::SeqCst) + 1;
                let message = panic_message(payload.as_ref()).to_string();
                tracing::error!(
                    model = %self.name,
                    panic = %message,
                    in_a_row,
                    "model panicked during {what}; its requests fail and the worker carries on"
                );
                Err(message)
            }
        }
    }

    /// Steps that panicked since the worker started.
    pub fn panics(&self) -> u64 {
        self.panics.load(Ordering::Relaxed)
    }

    /// The `/health` check. It holds no handle to the worker's queue, so it never keeps the
    /// worker alive.
    pub fn check(self: &Arc<Self>) -> HealthCheck {
        let health = self.clone();
        HealthCheck::new(move || {
            let name = &health.name;
            if health.stopped.load(Ordering::SeqCst) {
                return Err(format!("the {name} model's worker thread has stopped"));
            }
            let panics = health.consecutive_panics.load(Ordering::SeqCst);
            if panics >= BATCHER_UNHEALTHY_AFTER_PANICS {
                return Err(format!("the {name} model panicked on each of its last {panics} steps"));
            }
            Ok(())
        })
    }
}

/// Marks the worker stopped when dropped: on its return and on a panic that unwinds it.
struct StoppedOnDrop(Arc<WorkerHealth>);

impl Drop for StoppedOnDrop {
    fn drop(&mut self) {
        self.0.stopped.store(true, Ordering::SeqCst);
    }
}

/// Start the worker thread `{name}-{role}` for the model `name`: `body` runs on a thread of the
/// model's own compute pool, so every parallel loop of a step starts on a thread that is
/// awake (the spawned thread only waits for it). A panic outside [`WorkerHealth::guard`] ends
/// the worker, which its health then reports.
pub fn spawn_worker(
    name: &str,
    role: &str,
    body: impl FnOnce(&WorkerHealth) + Send + 'static,
) -> std::io::Result<Arc<WorkerHealth>> {
    let health = Arc::new(WorkerHealth::new(name));
    let pool = crate::compute_pool(name)?;
    let h = health.clone();
    let spawned = std::thread::Builder::new().name(format!("{name}-{role}")).spawn(move || {
        let _stopped = StoppedOnDrop(h.clone());
        pool.install(|| body(&h))
    });
    if let Err(e) = spawned {
        health.stopped.store(true, Ordering::SeqCst);
        return Err(e);
    }
    Ok(health)
}

/// The text of a panic's payload (`panic!` with a message gives a `&str` or a `String`).
fn panic_message(payload: &(dyn Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("a non-string payload")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
        let until = Instant::now() + Duration::from_secs(10);
        while !cond() {
            assert!(Instant::now() < until, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn a_guarded_panic_is_counted_and_the_health_turns_after_enough_in_a_row() {
        let (tx, rx) = std::sync::mpsc::channel::<bool>();
        let health = spawn_worker("unit", "test", move |h| {
            for panic in rx {
                let r = h.guard("a test step", || if panic { panic!("boom {}", 7) } else { 1 });
                assert_eq!(r.is_err(), panic);
                if let Err(m) = r {
                    assert_eq!(m, "boom 7");
                }
            }
        })
        .unwrap();
        let check = health.check();
        assert_eq!(check.check(), Ok(()));
        for _ in 0..BATCHER_UNHEALTHY_AFTER_PANICS {
            tx.send(true).unwrap();
        }
        wait_for("the panics", || health.panics() == u64::from(BATCHER_UNHEALTHY_AFTER_PANICS));
        assert!(check.check().unwrap_err().contains("unit model panicked"), "{:?}", check.check());
        tx.send(false).unwrap();
        wait_for("a good step", || check.check().is_ok());
        drop(tx);
        wait_for("the stop", || check.check().is_err());
        assert!(check.check().unwrap_err().contains("worker thread has stopped"));
    }

    #[test]
    fn an_unguarded_panic_ends_the_worker_and_its_health_says_so() {
        let health = spawn_worker("fragile", "test", |_| panic!("outside any step")).unwrap();
        wait_for("the stop", || health.check().check().is_err());
    }
}
