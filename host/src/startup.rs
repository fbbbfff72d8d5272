//! Start-up calls that wait out outages. A stream that does not exist, or a
//! request refused for good, is a configuration error and stops the start;
//! an endpoint that cannot be reached, throttling, 5xx or a call left
//! unanswered is an outage: the call is retried with capped backoff, forever,
//! while `/healthz` answers 200 and `/readyz` 503 naming what is awaited.

use crate::backoff::Backoff;
use crate::server::Readiness;
use crate::shutdown::Shutdown;
use std::future::Future;

/// Shutdown was requested while start-up waited for an endpoint: not an
/// error (nothing was read, nothing is lost); `run` stops cleanly.
#[derive(Debug, thiserror::Error)]
#[error("shut down during start-up, while waiting for {0} to answer")]
pub struct Interrupted(pub String);

/// Whether `error` (or what it wraps) is a start-up cut short by shutdown.
pub fn is_interrupted(error: &anyhow::Error) -> bool {
    error.chain().any(|e| e.is::<Interrupted>())
}

/// Why a start-up call failed.
#[derive(Debug)]
pub enum StartFailure {
    /// Worth waiting for: unreachable, throttled, 5xx, timed out.
    Outage(String),
    /// Will not get better by waiting: the configuration must change.
    Fatal(anyhow::Error),
}

impl StartFailure {
    /// Classifies an SDK error: a missing resource or a refused request is
    /// fatal, anything transient an outage.
    pub fn of_sdk<E, R>(err: &aws_sdk_kinesis::error::SdkError<E, R>, what: &str) -> StartFailure
    where
        E: aws_sdk_kinesis::error::ProvideErrorMetadata + std::error::Error + 'static,
        R: std::fmt::Debug + 'static,
    {
        if let Some(why) = crate::tls::certificate_failure(err) {
            // Waiting does not make a certificate trusted.
            return StartFailure::Fatal(anyhow::anyhow!(
                "{what}: TLS: the endpoint's certificate is refused: {why} (trusted: {})",
                crate::tls::trust_text()
            ));
        }
        let text = format!("{what}: {}", crate::kinesis::describe(err));
        if crate::kinesis::is_not_found(err) || !crate::kinesis::is_transient(err) {
            StartFailure::Fatal(anyhow::anyhow!(text))
        } else {
            StartFailure::Outage(text)
        }
    }
}

/// Calls `call` until it succeeds or fails fatally; an outage is logged,
/// shown on `/readyz` as "waiting for `what`: error", and retried with
/// backoff. Gives up only when shutdown is requested.
pub async fn until_reachable<T, F, Fut>(
    what: &str,
    readiness: &Readiness,
    shutdown: &Shutdown,
    mut call: F,
) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, StartFailure>>,
{
    let mut backoff = Backoff::kinesis();
    loop {
        let error = tokio::select! {
            result = call() => match result {
                Ok(value) => {
                    if backoff.attempts() > 0 {
                        tracing::info!(%what, "reachable again; going on with start-up");
                        readiness.waiting_for(None);
                    }
                    return Ok(value);
                }
                Err(StartFailure::Fatal(e)) => return Err(e),
                Err(StartFailure::Outage(error)) => error,
            },
            _ = shutdown.requested() => return Err(Interrupted(what.to_string()).into()),
        };
        if backoff.attempts() == 0 {
            tracing::warn!(%what, %error, "not reachable at start-up; retrying until it answers");
        } else {
            tracing::debug!(%what, %error, attempt = backoff.attempts(), "still not reachable");
        }
        readiness.waiting_for(Some(format!("{what}: {error}")));
        tokio::select! {
            _ = backoff.wait() => {}
            _ = shutdown.requested() => return Err(Interrupted(what.to_string()).into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::Duration;

    #[tokio::test]
    async fn an_outage_is_waited_out_and_shown_on_readyz() {
        let readiness = Readiness::default();
        let shutdown = Shutdown::new();
        let calls = AtomicU32::new(0);
        let seen = std::sync::Mutex::new(Vec::new());
        let value = until_reachable("outputs.a", &readiness, &shutdown, || async {
            let n = calls.fetch_add(1, Ordering::Relaxed);
            seen.lock().unwrap().push(readiness.check());
            if n < 3 {
                Err(StartFailure::Outage("connection refused".into()))
            } else {
                Ok(n)
            }
        })
        .await
        .unwrap();
        assert_eq!(value, 3);
        let seen = seen.lock().unwrap();
        assert_eq!(seen[0], Err("starting".into()));
        assert_eq!(
            seen[1],
            Err("starting: waiting for outputs.a: connection refused".into())
        );
        assert_eq!(readiness.check(), Err("starting".into()), "cleared");
    }

    #[tokio::test]
    async fn a_fatal_error_stops_at_once_and_shutdown_ends_the_wait() {
        let readiness = Readiness::default();
        let shutdown = Shutdown::new();
        let err = until_reachable("outputs.a", &readiness, &shutdown, || async {
            Err::<(), _>(StartFailure::Fatal(anyhow::anyhow!("no such stream")))
        })
        .await
        .unwrap_err();
        assert!(err.to_string().contains("no such stream"));

        let stopper = shutdown.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            stopper.request();
        });
        let err = until_reachable("outputs.a", &readiness, &shutdown, || async {
            Err::<(), _>(StartFailure::Outage("refused".into()))
        })
        .await
        .unwrap_err();
        assert!(err.to_string().contains("shut down"), "{err}");
        let wrapped = err.context("c.toml: outputs.a");
        assert!(is_interrupted(&wrapped), "found under the context");
        assert!(!is_interrupted(&anyhow::anyhow!("no such stream")));
    }
}
