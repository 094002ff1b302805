//! One read-index round shared by every read waiting for one. The rule that
//! keeps the reads linearizable: a read is answered only by a round that
//! *started after the read arrived*, because a round already under way may
//! have read the commit index before a write the reader saw acknowledged. So
//! at most one round is in flight; a read arriving meanwhile waits for the
//! next one, which starts when it ends and serves every read then waiting.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use tokio::sync::Notify;

pub struct Batch<T> {
    state: Mutex<State<T>>,
    /// Told when a round ends (with a result or abandoned).
    ended: Notify,
    waits: AtomicU64,
    rounds: AtomicU64,
}

struct State<T> {
    /// Rounds started so far; the one in flight, if any, is number `started`.
    started: u64,
    in_flight: bool,
    /// The last round that ended with a result: its number and the result.
    last: Option<(u64, T)>,
}

impl<T: Clone> Default for Batch<T> {
    fn default() -> Batch<T> {
        Batch {
            state: Mutex::new(State { started: 0, in_flight: false, last: None }),
            ended: Notify::new(),
            waits: AtomicU64::new(0),
            rounds: AtomicU64::new(0),
        }
    }
}

impl<T: Clone> Batch<T> {
    /// The result of a round started after this call began: this caller runs
    /// `round` when none is in flight, else it waits for the next one (run by
    /// whichever waiter finds the way free first).
    pub async fn run<F, Fut>(&self, round: F) -> T
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = T>,
    {
        self.waits.fetch_add(1, Ordering::Relaxed);
        let need = self.state.lock().started + 1;
        loop {
            // Registered before the state is looked at: no end is missed.
            let ended = self.ended.notified();
            let drive = {
                let mut s = self.state.lock();
                match &s.last {
                    Some((n, t)) if *n >= need => return t.clone(),
                    _ if s.in_flight => None,
                    _ => {
                        s.started += 1;
                        s.in_flight = true;
                        Some(s.started)
                    }
                }
            };
            match drive {
                Some(number) => return self.drive(number, round).await,
                None => ended.await,
            }
        }
    }

    async fn drive<F, Fut>(&self, number: u64, round: F) -> T
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = T>,
    {
        self.rounds.fetch_add(1, Ordering::Relaxed);
        // A driver dropped mid-round (its client went away) frees the way: a
        // waiter starts the next round.
        let mut guard = Ends { batch: self, result: None };
        let t = round().await;
        guard.result = Some((number, t.clone()));
        t
    }

    /// Calls that asked for a read index, and the rounds that answered them.
    pub fn counts(&self) -> (u64, u64) {
        (self.waits.load(Ordering::Relaxed), self.rounds.load(Ordering::Relaxed))
    }
}

/// Ends the round in flight when dropped: publishes its result, if it has one.
struct Ends<'a, T> {
    batch: &'a Batch<T>,
    result: Option<(u64, T)>,
}

impl<T> Drop for Ends<'_, T> {
    fn drop(&mut self) {
        {
            let mut s = self.batch.state.lock();
            s.in_flight = false;
            if let Some(r) = self.result.take() {
                s.last = Some(r);
            }
        }
        self.batch.ended.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU64;
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    /// Every caller gets a value read at the start of a round that began after
    /// it arrived: `acked` stands for the writes acknowledged, the round's
    /// result for the commit index it saw.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn each_caller_sees_what_was_acknowledged_before_it_and_rounds_are_shared() {
        let batch = Arc::new(Batch::<u64>::default());
        let acked = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        for i in 0..64u64 {
            let (batch, acked) = (batch.clone(), acked.clone());
            tasks.push(tokio::spawn(async move {
                tokio::time::sleep(Duration::from_micros(300 * (i % 16))).await;
                let before = acked.fetch_add(1, Ordering::SeqCst) + 1;
                let seen = batch
                    .run(|| async {
                        let seen = acked.load(Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(2)).await;
                        seen
                    })
                    .await;
                assert!(seen >= before, "a read saw {seen} writes, {before} were acknowledged before it began");
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let (waits, rounds) = batch.counts();
        assert_eq!(waits, 64);
        assert!(rounds < 32, "{rounds} rounds for {waits} callers: not shared");
    }

    /// A caller arriving while a round is in flight never takes that round's
    /// result: it waits for the next round.
    #[tokio::test]
    async fn a_round_in_flight_does_not_serve_a_later_caller() {
        let batch = Arc::new(Batch::<u64>::default());
        let (go_tx, go_rx) = tokio::sync::oneshot::channel::<()>();
        let first = {
            let batch = batch.clone();
            tokio::spawn(async move {
                batch
                    .run(|| async {
                        go_rx.await.unwrap();
                        1
                    })
                    .await
            })
        };
        while batch.counts().1 == 0 {
            tokio::task::yield_now().await;
        }
        let second = {
            let batch = batch.clone();
            tokio::spawn(async move { batch.run(|| async { 2 }).await })
        };
        tokio::task::yield_now().await;
        go_tx.send(()).unwrap();
        assert_eq!(first.await.unwrap(), 1);
        assert_eq!(second.await.unwrap(), 2);
        assert_eq!(batch.counts(), (2, 2));
    }

    /// A driver dropped mid-round (its client gone) does not strand the waiters.
    #[tokio::test]
    async fn an_abandoned_round_is_taken_over() {
        let batch = Arc::new(Batch::<u64>::default());
        let stuck = {
            let batch = batch.clone();
            tokio::spawn(async move { batch.run(std::future::pending::<u64>).await })
        };
        while batch.counts().1 == 0 {
            tokio::task::yield_now().await;
        }
        let waiter = {
            let batch = batch.clone();
            tokio::spawn(async move { batch.run(|| async { 7 }).await })
        };
        tokio::task::yield_now().await;
        stuck.abort();
        let got = tokio::time::timeout(Duration::from_secs(5), waiter).await.expect("taken over").unwrap();
        assert_eq!(got, 7);
    }
}
