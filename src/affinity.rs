//! One thread per CPU: pinning a pool of workers that is exactly as wide as the CPUs this
//! process may run on.
//!
//! Why: a worker that keeps its state in one core's caches (`scan`'s engine shards: each
//! shard's window maps and the batch it parses) loses them every time the scheduler moves
//! it, and with two workers on two CPUs the scheduler moved them whenever one waited for
//! the other. Pinned, `scan --threads 2` ran 6–12 % faster on the 2-core development
//! machine, also with a busy loop on one of the CPUs (docs/performance.md).
//!
//! Only a pool as wide as the allowed CPUs is pinned: each worker then has a different CPU,
//! and two such pools (two scans at once) share every CPU alike. A narrower pool is left to
//! the scheduler, which spreads it over the idle CPUs; pinning it to the first CPUs would
//! stack concurrent pools there.

/// The CPU each of `workers` threads is pinned to (worker `i` to element `i`): the CPUs
/// the calling thread may run on (the process's, which threads inherit, unless this thread
/// was narrowed), when there are exactly `workers` of them. `None` (no pinning) otherwise,
/// or when the allowed set cannot be read (more CPUs than a `CpuSet` holds, say).
///
/// A thread a pinned worker starts (tokio's blocking pool, for a host-name lookup) inherits
/// its one CPU; those are short and rare.
pub(crate) fn plan(workers: usize) -> Option<Vec<usize>> {
    plan_from(&allowed()?, workers)
}

/// [`plan`] over a known allowed set (ascending CPU numbers).
fn plan_from(allowed: &[usize], workers: usize) -> Option<Vec<usize>> {
    (workers > 1 && allowed.len() == workers).then(|| allowed.to_vec())
}

/// Pins the calling thread to `cpu`. Best effort: false when the system refuses.
pub(crate) fn pin_current(cpu: usize) -> bool {
    imp::pin(cpu)
}

/// The CPUs the calling thread may run on, ascending.
fn allowed() -> Option<Vec<usize>> {
    imp::allowed()
}

#[cfg(target_os = "linux")]
mod imp {
    use rustix::thread::{sched_getaffinity, sched_setaffinity, CpuSet};

    pub(super) fn allowed() -> Option<Vec<usize>> {
        let set = sched_getaffinity(None).ok()?;
        Some((0..CpuSet::MAX_CPU).filter(|&c| set.is_set(c)).collect())
    }

    pub(super) fn pin(cpu: usize) -> bool {
        if cpu >= CpuSet::MAX_CPU {
            return false;
        }
        let mut one = CpuSet::new();
        one.set(cpu);
        sched_setaffinity(None, &one).is_ok()
    }
}

#[cfg(not(target_os = "linux"))]
mod imp {
    pub(super) fn allowed() -> Option<Vec<usize>> {
        None
    }

    pub(super) fn pin(_cpu: usize) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pool_as_wide_as_the_allowed_cpus_gets_one_cpu_each_in_order() {
        assert_eq!(plan_from(&[0, 1], 2), Some(vec![0, 1]));
        // A restricted set (a container's cpuset, `taskset`): its own CPU numbers.
        assert_eq!(plan_from(&[2, 5, 7], 3), Some(vec![2, 5, 7]));
    }

    #[test]
    fn a_narrower_or_wider_pool_or_a_single_worker_is_left_to_the_scheduler() {
        assert_eq!(plan_from(&[0, 1, 2, 3], 2), None);
        assert_eq!(plan_from(&[0, 1], 3), None);
        assert_eq!(plan_from(&[0], 1), None);
        assert_eq!(plan_from(&[], 0), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_pinned_thread_may_run_only_on_its_cpu_and_the_others_keep_theirs() {
        let before = allowed().expect("the affinity of this process is readable");
        let cpu = *before.last().expect("at least one CPU");
        let inside = std::thread::spawn(move || {
            assert!(pin_current(cpu));
            allowed()
        })
        .join()
        .expect("the pinned thread ran");
        assert_eq!(inside, Some(vec![cpu]));
        // Affinity is per thread: the test's own thread still has every CPU.
        assert_eq!(allowed(), Some(before));
        assert!(!pin_current(usize::MAX));
    }
}
