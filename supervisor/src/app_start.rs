//! Building the application in a worker: the factory is called and
//! awaited, and whatever goes wrong (an `Err`, a panic in the call or in
//! the future) becomes the one line its boot failure reports.

use std::error::Error as StdError;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::task::Poll;

use drover_worker::BoxError;

use crate::worker_context::Worker;

/// Calls `factory` for `worker` and awaits the application it builds;
/// `Err` is why it could not: the error with its whole source chain, or
/// the panic's message.
pub(crate) async fn start_app<F, Fut, S, E>(factory: F, worker: Worker) -> Result<S, String>
where
    F: FnOnce(Worker) -> Fut,
    Fut: Future<Output = Result<S, E>>,
    E: Into<BoxError>,
{
    let future = catch_unwind(AssertUnwindSafe(|| factory(worker))).map_err(panicked)?;
    let mut future = std::pin::pin!(future);
    let built = std::future::poll_fn(|cx| {
        match catch_unwind(AssertUnwindSafe(|| future.as_mut().poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(result)) => Poll::Ready(Ok(result)),
            Err(panic) => Poll::Ready(Err(panicked(panic))),
        }
    })
    .await?;
    built.map_err(|error| {
        let error: BoxError = error.into();
        format!("the application failed to start: {}", with_sources(&*error))
    })
}

/// `error: its source: that one's source...`, leaving out a source whose
/// text the message already includes (many errors repeat their cause):
/// how drover reports an application's boot failure, for an application
/// that reports its own errors the same way (an `/healthz` answer, say).
pub fn with_sources(error: &(dyn StdError + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

fn panicked(panic: Box<dyn std::any::Any + Send>) -> String {
    let message = panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_else(|| "the application panicked".to_owned());
    format!("the application panicked while starting: {message}")
}

#[cfg(test)]
mod tests {
    use super::{start_app, with_sources};
    use crate::worker_context::Worker;
    use std::fmt;

    #[derive(Debug)]
    struct Layer(&'static str, Option<Box<Layer>>);

    impl fmt::Display for Layer {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.0)
        }
    }

    impl std::error::Error for Layer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|e| e as _)
        }
    }

    #[test]
    fn the_whole_source_chain_is_told_once() {
        let refused = Layer("connection refused", None);
        let connect = Layer(
            "cannot connect: connection refused",
            Some(Box::new(refused)),
        );
        let pool = Layer("building the pool", Some(Box::new(connect)));
        assert_eq!(
            with_sources(&pool),
            "building the pool: cannot connect: connection refused"
        );
    }

    async fn worker() -> Worker {
        let server = drover_worker::Server::bind("127.0.0.1:0").await.unwrap();
        let identity = crate::worker_context::WorkerIdentity {
            index: 0,
            generation: 0,
        };
        Worker::new(
            identity,
            server.handle(),
            tokio_util::task::TaskTracker::new(),
        )
    }

    #[tokio::test]
    async fn an_awaited_application_is_built() {
        let built = start_app(
            |_| async {
                tokio::task::yield_now().await;
                Ok::<_, std::io::Error>(7)
            },
            worker().await,
        );
        assert_eq!(built.await, Ok(7));
    }

    #[tokio::test]
    async fn an_error_is_a_boot_failure_with_its_sources() {
        let failed = start_app(
            |_| async { Err::<(), _>(Layer("no pool", Some(Box::new(Layer("refused", None))))) },
            worker().await,
        );
        assert_eq!(
            failed.await,
            Err("the application failed to start: no pool: refused".to_owned())
        );
    }

    #[tokio::test]
    async fn a_panic_in_the_call_or_in_the_future_is_a_boot_failure() {
        let in_call = start_app(
            |_| -> std::future::Ready<Result<(), std::io::Error>> { panic!("bad config") },
            worker().await,
        );
        let message = in_call.await.unwrap_err();
        assert!(message.ends_with("bad config"), "{message}");
        let in_future = start_app(
            |_| async {
                tokio::task::yield_now().await;
                panic!("lost the database");
                #[allow(unreachable_code)]
                Ok::<(), std::io::Error>(())
            },
            worker().await,
        );
        let message = in_future.await.unwrap_err();
        assert!(message.ends_with("lost the database"), "{message}");
    }
}
