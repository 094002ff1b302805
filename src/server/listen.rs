//! The accept loop: at most `cap` connections at once (at the cap it stops
//! accepting, and waiting clients queue in the kernel's backlog until a slot
//! frees), and accept errors never end it: running out of file descriptors or
//! memory pauses it, with a growing backoff, instead of spinning or exiting.

use std::future::Future;
use std::io;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use super::metrics::ConnectionStats;

/// File descriptors left for the store beyond those open when the server
/// starts: its reader's segment handles, removed segments old snapshots hold
/// (compaction waits past that many), and 32 for new log segments, index files
/// being written, directory syncs and a compaction cycle's segments.
pub const FD_RESERVE: usize = jobq::log::reader::MAX_OPEN_SEGMENTS + jobq::store::MAX_REMOVED_HELD + 32;

/// Something that accepts connections (a TCP listener; a fake in tests).
pub trait Accept {
    type Conn;
    fn accept(&mut self) -> impl Future<Output = io::Result<Self::Conn>>;
}

impl Accept for tokio::net::TcpListener {
    type Conn = tokio::net::TcpStream;

    async fn accept(&mut self) -> io::Result<tokio::net::TcpStream> {
        tokio::net::TcpListener::accept(self).await.map(|(tcp, _)| tcp)
    }
}

/// The connection slots: a connection holds a permit while it lives. `crowded`
/// is true from when every slot is taken until a tenth of them are free again.
pub struct Slots {
    sem: Arc<Semaphore>,
    cap: usize,
    crowded: watch::Sender<bool>,
}

impl Slots {
    pub fn new(cap: usize) -> Slots {
        Slots { sem: Arc::new(Semaphore::new(cap)), cap, crowded: watch::Sender::new(false) }
    }

    /// Watch whether every slot is taken.
    pub fn crowded(&self) -> watch::Receiver<bool> {
        self.crowded.subscribe()
    }

    /// Resolves when no connection is open.
    pub async fn all_free(&self) {
        let _all = self.sem.acquire_many(self.cap as u32).await;
    }
}

/// True for the accept errors that mean "out of a resource", as opposed to one
/// client's connection failing.
fn out_of_resources(e: &io::Error) -> bool {
    // EMFILE, ENFILE, ENOBUFS, ENOMEM.
    matches!(e.raw_os_error(), Some(24 | 23 | 105 | 12))
}

/// Pauses after failed accepts: 10 ms doubling to 1 s, reset by a success.
struct Backoff {
    next: Duration,
    warned: Option<Instant>,
}

const FIRST_PAUSE: Duration = Duration::from_millis(10);
const LONGEST_PAUSE: Duration = Duration::from_secs(1);

impl Backoff {
    fn pause(&mut self, e: &io::Error) -> Duration {
        let pause = self.next;
        self.next = (self.next * 2).min(LONGEST_PAUSE);
        if out_of_resources(e) {
            // Said once a minute at most: the condition may last.
            if self.warned.is_none_or(|w| w.elapsed() > Duration::from_secs(60)) {
                self.warned = Some(Instant::now());
                tracing::warn!(error = %e, "cannot accept connections (out of resources); pausing accepts");
            }
        } else {
            tracing::debug!(error = %e, "accepting a connection failed");
        }
        pause
    }
}

/// Accept until `stop` resolves, handing each connection and its slot to
/// `spawn`; full slots and failed accepts are counted in `stats`.
pub async fn accept_loop<A: Accept>(
    listener: &mut A,
    slots: &Slots,
    stats: &ConnectionStats,
    stop: impl Future<Output = ()>,
    mut spawn: impl FnMut(A::Conn, OwnedSemaphorePermit),
) {
    tokio::pin!(stop);
    let mut backoff = Backoff { next: FIRST_PAUSE, warned: None };
    let mut said_full = false;
    loop {
        let permit = match slots.sem.clone().try_acquire_owned() {
            Ok(p) => {
                // Hysteresis: at least one slot stays free before idle connections are
                // spared again, else the first close clears the flag for the rest.
                if slots.sem.available_permits() >= (slots.cap / 10).max(1) {
                    slots.crowded.send_if_modified(|c| std::mem::replace(c, false));
                }
                p
            }
            Err(_) => {
                stats.limit_reached.fetch_add(1, Ordering::Relaxed);
                slots.crowded.send_if_modified(|c| !std::mem::replace(c, true));
                if !said_full {
                    said_full = true;
                    tracing::warn!(
                        max = slots.cap,
                        "connection limit reached; idle connections are closed and new clients wait for a slot"
                    );
                }
                tokio::select! {
                    _ = &mut stop => return,
                    p = slots.sem.clone().acquire_owned() => p.expect("the semaphore is never closed"),
                }
            }
        };
        let accepted = tokio::select! {
            _ = &mut stop => return,
            r = listener.accept() => r,
        };
        match accepted {
            Ok(conn) => {
                backoff.next = FIRST_PAUSE;
                if slots.sem.available_permits() > slots.cap / 2 {
                    said_full = false;
                }
                spawn(conn, permit);
            }
            Err(e) => {
                stats.accept_errors.fetch_add(1, Ordering::Relaxed);
                let pause = backoff.pause(&e);
                tokio::select! {
                    _ = &mut stop => return,
                    _ = tokio::time::sleep(pause) => {}
                }
            }
        }
    }
}

/// How many connections the open-file limit leaves room for: the soft limit,
/// less the descriptors open now and [`FD_RESERVE`]. `None` when unknown (no
/// `/proc`).
pub fn fd_room() -> Option<usize> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let soft = line["Max open files".len()..].split_whitespace().next()?;
    let soft: usize = match soft {
        "unlimited" => return None,
        n => n.parse().ok()?,
    };
    let open = std::fs::read_dir("/proc/self/fd").ok()?.count();
    Some(soft.saturating_sub(open + FD_RESERVE))
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// Fails with EMFILE a number of times, then hands out connections (numbers).
    struct Flaky {
        script: VecDeque<Result<u32, i32>>,
        calls: Arc<AtomicUsize>,
    }

    impl Accept for Flaky {
        type Conn = u32;

        async fn accept(&mut self) -> io::Result<u32> {
            self.calls.fetch_add(1, Ordering::Relaxed);
            match self.script.pop_front() {
                Some(Ok(n)) => Ok(n),
                Some(Err(code)) => Err(io::Error::from_raw_os_error(code)),
                None => std::future::pending().await,
            }
        }
    }

    #[tokio::test]
    async fn out_of_descriptors_pauses_the_loop_and_it_recovers() {
        let mut script: VecDeque<Result<u32, i32>> = (0..6).map(|_| Err(24)).collect();
        script.push_back(Ok(1));
        script.push_back(Err(103)); // ECONNABORTED: one client's failure
        script.push_back(Ok(2));
        let calls = Arc::new(AtomicUsize::new(0));
        let mut flaky = Flaky { script, calls: calls.clone() };
        let slots = Slots::new(8);
        let mut got = Vec::new();
        let started = Instant::now();
        let stop = tokio::time::sleep(Duration::from_millis(1500));
        let stats = ConnectionStats::default();
        accept_loop(&mut flaky, &slots, &stats, stop, |n, _permit| got.push((n, started.elapsed()))).await;
        assert_eq!(got.iter().map(|(n, _)| *n).collect::<Vec<_>>(), vec![1, 2], "the loop went on after the errors");
        assert_eq!(stats.accept_errors.load(Ordering::Relaxed), 7, "every failed accept is counted");
        assert_eq!(calls.load(Ordering::Relaxed), 10, "no accept is retried without a pause");
        // 10 + 20 + 40 + 80 + 160 + 320 ms of pauses before the first connection.
        assert!(got[0].1 >= Duration::from_millis(630), "paused {:?}", got[0].1);
    }

    #[tokio::test]
    async fn at_the_cap_it_stops_accepting_until_a_slot_frees() {
        let script: VecDeque<Result<u32, i32>> = (1..=3).map(Ok).collect();
        let calls = Arc::new(AtomicUsize::new(0));
        let mut flaky = Flaky { script, calls: calls.clone() };
        let slots = Slots::new(2);
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let free_one = async {
            // Two connections arrive and hold their slots; the third waits.
            let (_, first) = rx.recv().await.unwrap();
            let (_, _second) = rx.recv().await.unwrap();
            tokio::time::sleep(Duration::from_millis(200)).await;
            assert_eq!(calls.load(Ordering::Relaxed), 2, "no accept while every slot is taken");
            drop(first);
            let (third, _) = rx.recv().await.unwrap();
            assert_eq!(third, 3);
        };
        let stats = ConnectionStats::default();
        let looping = accept_loop(&mut flaky, &slots, &stats, free_one, |n, permit| tx.send((n, permit)).unwrap());
        tokio::time::timeout(Duration::from_secs(10), looping).await.expect("the loop ends when told");
        assert!(stats.limit_reached.load(Ordering::Relaxed) >= 1, "the full table is counted");
    }
}
