//! [`Quiet`]: a future that a long-lived `select!` loop polls only after
//! it asked to be woken.
//!
//! A connection's loop polls every branch of its `select!` at every
//! wake-up, and most branches wait for rare events (the node stopping,
//! `CLIENT KILL`, the read timeout). Polling such a future again is not
//! free: a cancellation future takes its token's lock, a timer checks its
//! registration. Counted with callgrind, those polls were ~11% of a GET's
//! instructions on a coordinator (two cancellation futures and a timer,
//! polled at each of the ~5 wake-ups a request causes). [`Quiet`] gives
//! the inner future a waker of its own, and skips the poll unless that
//! waker fired since the last one.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};

use futures::task::AtomicWaker;

/// The inner future's own waker: records the wake-up and passes it on to
/// the task that polls the [`Quiet`].
#[derive(Default)]
struct Signal {
    woken: AtomicBool,
    task: AtomicWaker,
}

impl Wake for Signal {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}

/// `F`, polled only when it asked to be (on the first poll, after its
/// waker fired, after it was ready, and after [`Quiet::get_mut`]).
pub struct Quiet<F> {
    inner: F,
    signal: Arc<Signal>,
    waker: Waker,
}

impl<F: Future + Unpin> Quiet<F> {
    /// Wraps `inner`; its first poll goes through.
    pub fn new(inner: F) -> Self {
        let signal = Arc::new(Signal::default());
        signal.woken.store(true, Ordering::Relaxed);
        Quiet {
            inner,
            waker: Waker::from(signal.clone()),
            signal,
        }
    }

    /// The inner future, to change it (say, to move a timer's deadline):
    /// the next poll goes through.
    pub fn get_mut(&mut self) -> &mut F {
        self.signal.woken.store(true, Ordering::Release);
        &mut self.inner
    }

    /// The inner future, to read it.
    pub fn get_ref(&self) -> &F {
        &self.inner
    }
}

impl<F: Future + Unpin> Future for Quiet<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = &mut *self;
        // Registered first, so a wake-up between the check and the return
        // still reaches this task.
        this.signal.task.register(cx.waker());
        if !this.signal.woken.swap(false, Ordering::AcqRel) {
            return Poll::Pending;
        }
        let mut inner_cx = Context::from_waker(&this.waker);
        let out = Pin::new(&mut this.inner).poll(&mut inner_cx);
        if out.is_ready() {
            // A future polled again after it was ready (a timer that fired)
            // answers at once, without waking anyone: let the next poll in.
            this.signal.woken.store(true, Ordering::Release);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;
    use tokio_util::sync::CancellationToken;

    /// Counts its polls; ready once `ready` is set, waking on `set`.
    struct Counted {
        polls: Arc<AtomicUsize>,
        ready: Arc<AtomicBool>,
        waker: Arc<AtomicWaker>,
    }

    impl Future for Counted {
        type Output = ();
        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            self.polls.fetch_add(1, Ordering::Relaxed);
            self.waker.register(cx.waker());
            if self.ready.load(Ordering::Acquire) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        }
    }

    #[test]
    fn the_inner_future_is_polled_only_after_its_waker_fired() {
        let polls = Arc::new(AtomicUsize::new(0));
        let ready = Arc::new(AtomicBool::new(false));
        let waker = Arc::new(AtomicWaker::new());
        let mut q = Quiet::new(Counted {
            polls: polls.clone(),
            ready: ready.clone(),
            waker: waker.clone(),
        });
        let task = futures::task::noop_waker();
        let mut cx = Context::from_waker(&task);
        for _ in 0..5 {
            assert!(Pin::new(&mut q).poll(&mut cx).is_pending());
        }
        assert_eq!(polls.load(Ordering::Relaxed), 1, "polled once, then quiet");
        ready.store(true, Ordering::Release);
        // Ready, but it has not asked to be polled: still quiet.
        assert!(Pin::new(&mut q).poll(&mut cx).is_pending());
        waker.wake();
        assert!(Pin::new(&mut q).poll(&mut cx).is_ready());
        assert_eq!(polls.load(Ordering::Relaxed), 2);
        // Once ready, it is polled again (a fired timer answers at once).
        assert!(Pin::new(&mut q).poll(&mut cx).is_ready());
        assert_eq!(polls.load(Ordering::Relaxed), 3);
        // So is it after a change.
        ready.store(false, Ordering::Release);
        assert!(Pin::new(&mut q).poll(&mut cx).is_pending());
        assert!(Pin::new(&mut q).poll(&mut cx).is_pending());
        assert_eq!(q.get_mut().polls.load(Ordering::Relaxed), 4);
        assert!(Pin::new(&mut q).poll(&mut cx).is_pending());
        assert_eq!(polls.load(Ordering::Relaxed), 5);
    }

    #[tokio::test]
    async fn a_cancellation_wakes_the_task_that_waits_on_it() {
        let token = CancellationToken::new();
        let mut stopping = Quiet::new(Box::pin(token.clone().cancelled_owned()));
        let cancel = token.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            cancel.cancel();
        });
        tokio::time::timeout(Duration::from_secs(10), &mut stopping)
            .await
            .expect("the cancellation reached the waiting task");
    }

    #[tokio::test(start_paused = true)]
    async fn a_timer_moved_sooner_fires_at_its_new_deadline() {
        let start = tokio::time::Instant::now();
        let mut sleep = Quiet::new(Box::pin(tokio::time::sleep(Duration::from_secs(600))));
        assert!(futures::poll!(&mut sleep).is_pending());
        let soon = start + Duration::from_secs(5);
        sleep.get_mut().as_mut().reset(soon);
        (&mut sleep).await;
        assert_eq!(tokio::time::Instant::now(), soon);
    }
}
