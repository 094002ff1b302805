//! The memory that request bodies and whole answers may hold at once, over all
//! connections (`serve --max-buffered`). Without it one API key holder with many
//! connections makes the server hold connections × `--max-body` bytes: bodies
//! sent slowly, or large answers a client never reads. Buffers of at most
//! [`FREE`] bytes are not counted (connections × 64 KiB at most); a larger body
//! waits for its share while it may still arrive, a larger answer that finds
//! no share is dropped for a 503 at once (its memory is freed, not held).

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Bytes a body or an answer may hold without a share.
pub const FREE: usize = 64 << 10;

/// Shares are counted in KiB (a semaphore's permits).
const UNIT: usize = 1 << 10;

pub struct Budget {
    sem: Arc<Semaphore>,
    units: u32,
}

/// Bytes held against the budget, given back when dropped.
#[derive(Default)]
pub struct Share(Option<OwnedSemaphorePermit>);

impl Share {
    /// Bytes this share covers.
    pub fn bytes(&self) -> usize {
        self.0.as_ref().map_or(0, |p| p.num_permits() * UNIT)
    }

    fn add(&mut self, more: OwnedSemaphorePermit) {
        match &mut self.0 {
            Some(p) => p.merge(more),
            None => self.0 = Some(more),
        }
    }
}

impl Budget {
    /// A budget of `bytes` (at least one unit; at most what a semaphore counts).
    pub fn new(bytes: usize) -> Budget {
        let units = (bytes / UNIT).clamp(1, (Semaphore::MAX_PERMITS).min(u32::MAX as usize)) as u32;
        Budget { sem: Arc::new(Semaphore::new(units as usize)), units }
    }

    /// The whole budget in bytes.
    pub fn total(&self) -> usize {
        self.units as usize * UNIT
    }

    /// Bytes held now.
    pub fn held(&self) -> usize {
        (self.units as usize).saturating_sub(self.sem.available_permits()) * UNIT
    }

    fn units_for(&self, bytes: usize) -> u32 {
        bytes.div_ceil(UNIT).clamp(1, self.units as usize) as u32
    }

    /// Grow `share` to cover `bytes`, waiting while the budget is held by
    /// others. Past [`FREE`] only; more than the whole budget takes all of it.
    pub async fn cover(&self, share: &mut Share, bytes: usize) {
        if bytes <= FREE {
            return;
        }
        let have = share.0.as_ref().map_or(0, |p| p.num_permits()) as u32;
        let target = self.units_for(bytes);
        if target > have {
            // The semaphore is never closed: an error cannot happen.
            if let Ok(p) = self.sem.clone().acquire_many_owned(target - have).await {
                share.add(p);
            }
        }
    }

    /// A share covering `bytes`, once there is room.
    pub async fn covered(self: Arc<Self>, bytes: usize) -> Share {
        let mut share = Share::default();
        self.cover(&mut share, bytes).await;
        share
    }

    /// A share covering `bytes` now, or None while the budget is held by others
    /// (an empty share for [`FREE`] bytes or fewer).
    pub fn try_cover(&self, bytes: usize) -> Option<Share> {
        if bytes <= FREE {
            return Some(Share::default());
        }
        self.sem.clone().try_acquire_many_owned(self.units_for(bytes)).ok().map(|p| Share(Some(p)))
    }
}

/// Renders of answers running at once on the blocking pool (a whole answer, or a
/// stream's chunk, each). What a render allocates is known only once it is done
/// (one row can be many MiB, its buffer up to twice that), so the budget can
/// cover it only then: bounding the renders bounds what is held uncovered, and
/// the blocking threads (each keeping its per-thread buffers), however many
/// requests there are. Requests wait for a permit here, on no thread.
pub struct Renders(Arc<Semaphore>);

/// A render's place among [`Renders`].
pub type Permit = Option<OwnedSemaphorePermit>;

/// Renders per core: some wait on the disk while others use the CPU.
const RENDERS_PER_CORE: usize = 2;

impl Renders {
    pub fn new(at_once: usize) -> Renders {
        Renders(Arc::new(Semaphore::new(at_once.max(1))))
    }

    /// [`RENDERS_PER_CORE`] per core, 2 to 32.
    pub fn per_core() -> Renders {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Renders::new((cores * RENDERS_PER_CORE).clamp(2, 32))
    }

    /// A permit to render, once one is free. A render holds it until its bytes
    /// are covered by a [`Share`] (or dropped), never while they are sent.
    pub async fn permit(&self) -> Permit {
        // The semaphore is never closed: None cannot happen.
        self.0.clone().acquire_owned().await.ok()
    }

    /// Renders that may start now.
    #[cfg(test)]
    pub fn free(&self) -> usize {
        self.0.available_permits()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn shares_are_bounded_and_given_back() {
        let b = Budget::new(1 << 20);
        let mut small = Share::default();
        b.cover(&mut small, FREE).await;
        assert_eq!((small.bytes(), b.held()), (0, 0), "small buffers are free");
        let mut a = Share::default();
        b.cover(&mut a, 300 << 10).await;
        assert_eq!(a.bytes(), 300 << 10);
        b.cover(&mut a, 500 << 10).await;
        assert_eq!((a.bytes(), b.held()), (500 << 10, 500 << 10), "grown, not taken twice");
        assert!(b.try_cover(600 << 10).is_none(), "over what is left");
        let c = b.try_cover(524 << 10).expect("what is left");
        drop(a);
        assert_eq!(b.held(), 524 << 10);
        drop(c);
        assert_eq!(b.held(), 0);
        // More than the whole budget: all of it (a body under --max-body always fits alone).
        let all = b.try_cover(5 << 20).unwrap();
        assert_eq!(all.bytes(), b.total());
    }

    #[tokio::test]
    async fn a_waiting_body_gets_its_share_once_one_is_given_back() {
        let b = Arc::new(Budget::new(1 << 20));
        let held = b.try_cover(1 << 20).unwrap();
        let waiter = {
            let b = b.clone();
            tokio::spawn(async move {
                let mut s = Share::default();
                b.cover(&mut s, 200 << 10).await;
                s.bytes()
            })
        };
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert!(!waiter.is_finished());
        drop(held);
        assert_eq!(waiter.await.unwrap(), 200 << 10);
    }
}
