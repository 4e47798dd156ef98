//! Health checks a service hands to its [`Server`](crate::Server): the health routes ask them,
//! so a service whose model worker has died answers 503 instead of a cheerful 200 while every
//! real request fails.
//!
//! ```
//! use std::sync::Arc;
//! use std::sync::atomic::{AtomicBool, Ordering};
//! use comps_core::health::HealthCheck;
//!
//! let alive = Arc::new(AtomicBool::new(true));
//! let check = HealthCheck::new({
//!     let alive = alive.clone();
//!     move || if alive.load(Ordering::Relaxed) { Ok(()) } else { Err("worker has stopped".into()) }
//! });
//! assert!(check.check().is_ok());
//! alive.store(false, Ordering::Relaxed);
//! assert_eq!(check.check(), Err("worker has stopped".to_string()));
//! ```

use std::sync::Arc;

/// A cheap, synchronous health probe: `Ok` when healthy, else the reason. Cloning shares the
/// probe. A check must not block (it runs on the async runtime for every health request).
#[derive(Clone)]
pub struct HealthCheck(Arc<dyn Fn() -> Result<(), String> + Send + Sync>);

impl HealthCheck {
    /// A check that calls `probe`.
    pub fn new(probe: impl Fn() -> Result<(), String> + Send + Sync + 'static) -> Self {
        Self(Arc::new(probe))
    }

    /// A check that always passes (a backend with nothing local to watch, e.g. a remote proxy).
    pub fn always_healthy() -> Self {
        Self::new(|| Ok(()))
    }

    /// A check that passes when every one of `checks` does; the reasons of those that fail
    /// are joined with "; ".
    pub fn all(checks: impl IntoIterator<Item = HealthCheck>) -> Self {
        let checks: Vec<HealthCheck> = checks.into_iter().collect();
        Self::new(move || {
            let failures: Vec<String> = checks.iter().filter_map(|c| c.check().err()).collect();
            if failures.is_empty() { Ok(()) } else { Err(failures.join("; ")) }
        })
    }

    /// Run the probe.
    pub fn check(&self) -> Result<(), String> {
        (self.0)()
    }
}

impl std::fmt::Debug for HealthCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HealthCheck").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_passes_only_when_every_check_does_and_says_every_reason() {
        assert!(HealthCheck::all([]).check().is_ok());
        assert!(HealthCheck::all([HealthCheck::always_healthy(), HealthCheck::always_healthy()]).check().is_ok());
        let failing = |why: &'static str| HealthCheck::new(move || Err(why.to_string()));
        let combined = HealthCheck::all([failing("a died"), HealthCheck::always_healthy(), failing("b died")]);
        assert_eq!(combined.check(), Err("a died; b died".to_string()));
    }
}
