//! The clock the direct PutRecords path signs with: the local clock moved
//! by the skew measured against the service's `Date` header, as the AWS
//! SDKs do (`aws-runtime`'s `ServiceClockSkewInterceptor`, which serves
//! every SDK call of this process). AWS refuses a request signed more than
//! 5 minutes off its clock; with the correction a host whose clock drifted
//! goes on delivering.
//!
//! Every answer refreshes the skew: the service's time is taken to be the
//! midpoint of the round trip (NTP's assumption), and an answer that took
//! longer than 15 minutes is not trusted. A refusal for skew (the signature
//! "expired" or "not yet current") whose answer moved the skew is retried at
//! once with the corrected time.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime};

/// Answers slower than this say nothing reliable about the service's clock.
const MAX_TRUSTED_ROUND_TRIP: Duration = Duration::from_secs(15 * 60);

/// The service's clock minus the local one, in milliseconds.
#[derive(Debug, Default)]
pub struct SigningClock {
    skew_ms: AtomicI64,
}

impl SigningClock {
    /// The time to sign a request with.
    pub fn now(&self) -> SystemTime {
        shift(SystemTime::now(), self.skew_ms.load(Ordering::Relaxed))
    }

    pub fn skew_ms(&self) -> i64 {
        self.skew_ms.load(Ordering::Relaxed)
    }

    /// Learns from an answer's `Date` header (request sent at `sent`,
    /// answered at `received`, local clock). Returns how far the skew moved,
    /// in milliseconds.
    pub fn observe(&self, sent: SystemTime, received: SystemTime, date: Option<&str>) -> i64 {
        let Some(server) = date.and_then(parse_http_date) else {
            return 0;
        };
        let Some(skew) = skew_of(sent, received, server) else {
            return 0;
        };
        let before = self.skew_ms.swap(skew, Ordering::Relaxed);
        (skew - before).abs()
    }
}

/// `server - midpoint(sent, received)`, in milliseconds; None when the round
/// trip took too long to say.
pub fn skew_of(sent: SystemTime, received: SystemTime, server: SystemTime) -> Option<i64> {
    let elapsed = received.duration_since(sent).unwrap_or_default();
    if elapsed > MAX_TRUSTED_ROUND_TRIP {
        return None;
    }
    let midpoint = sent + elapsed / 2;
    Some(match server.duration_since(midpoint) {
        Ok(ahead) => ahead.as_millis() as i64,
        Err(behind) => -(behind.duration().as_millis() as i64),
    })
}

/// Whether an error answer is AWS refusing a request as signed too far
/// from its clock.
pub fn is_skew_refusal(code: &str, message: &str) -> bool {
    matches!(
        code,
        "InvalidSignatureException"
            | "SignatureDoesNotMatch"
            | "RequestTimeTooSkewed"
            | "RequestExpired"
    ) && (code == "RequestTimeTooSkewed"
        || code == "RequestExpired"
        || message.contains("Signature expired")
        || message.contains("Signature not yet current"))
}

fn shift(t: SystemTime, ms: i64) -> SystemTime {
    let by = Duration::from_millis(ms.unsigned_abs());
    if ms >= 0 {
        t.checked_add(by)
    } else {
        t.checked_sub(by)
    }
    .unwrap_or(t)
}

fn parse_http_date(text: &str) -> Option<SystemTime> {
    let parsed = aws_smithy_types::DateTime::from_str(
        text.trim(),
        aws_smithy_types::date_time::Format::HttpDate,
    )
    .ok()?;
    SystemTime::try_from(parsed).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_skew_is_the_service_time_against_the_round_trips_midpoint() {
        let sent = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let received = sent + Duration::from_millis(200);
        let server = sent + Duration::from_secs(900) + Duration::from_millis(100);
        assert_eq!(skew_of(sent, received, server), Some(900_000));
        let behind = sent - Duration::from_secs(60) + Duration::from_millis(100);
        assert_eq!(skew_of(sent, received, behind), Some(-60_000));
        assert_eq!(
            skew_of(sent, sent + Duration::from_secs(16 * 60), server),
            None,
            "a round trip of 16 minutes says nothing"
        );
    }

    #[test]
    fn a_date_header_moves_the_signing_clock() {
        let clock = SigningClock::default();
        let now = SystemTime::now();
        let ahead = aws_smithy_types::DateTime::from(now + Duration::from_secs(15 * 60))
            .fmt(aws_smithy_types::date_time::Format::HttpDate)
            .unwrap();
        let moved = clock.observe(now, now, Some(&ahead));
        assert!((899_000..=901_000).contains(&moved), "{moved}");
        let signs_at = clock.now().duration_since(SystemTime::now()).unwrap();
        assert!(signs_at > Duration::from_secs(14 * 60), "{signs_at:?}");
        assert_eq!(clock.observe(now, now, Some("not a date")), 0);
        assert_eq!(clock.observe(now, now, None), 0);
    }

    #[test]
    fn skew_refusals_are_told_from_other_signature_errors() {
        assert!(is_skew_refusal(
            "InvalidSignatureException",
            "Signature expired: 20261206T190000Z is now earlier than 20261206T191000Z (20261206T191500Z - 5 min.)"
        ));
        assert!(is_skew_refusal(
            "InvalidSignatureException",
            "Signature not yet current: 20261206T193000Z is still later than 20261206T192000Z (20261206T191500Z + 5 min.)"
        ));
        assert!(!is_skew_refusal(
            "InvalidSignatureException",
            "The request signature we calculated does not match the signature you provided."
        ));
        assert!(!is_skew_refusal(
            "AccessDeniedException",
            "Signature expired"
        ));
    }
}
