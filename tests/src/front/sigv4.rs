//! SigV4 verification, written from AWS's specification and independent of
//! the `aws-sigv4` crate the host signs with: a verifier that shared the
//! signer's code would accept whatever that code gets wrong. Pure: a request
//! (method, path, query, headers, body) and a secret in, a verdict out.
//!
//! Upstream: "Create a signed AWS API request"
//! (<https://docs.aws.amazon.com/IAM/latest/UserGuide/create-signed-request.html>)
//! and the error answers Kinesis, DynamoDB and STS give.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// What the `Authorization` header says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization {
    pub access_key: String,
    /// `20261206`
    pub date: String,
    pub region: String,
    pub service: String,
    /// Lower-case, in the order given.
    pub signed_headers: Vec<String>,
    pub signature: String,
}

/// Why a request is refused, as AWS words it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No `Authorization` header (or not SigV4).
    Missing,
    /// Malformed `Authorization` or `X-Amz-Date`.
    Incomplete(String),
    /// Unknown access key, or a session token that does not match it.
    UnknownKey,
    /// A session credential past its expiry, or revoked.
    Expired,
    /// Signed outside ±5 minutes of the service's clock: the message names
    /// both times, as AWS's does.
    Skewed(String),
    /// The signature does not match.
    Mismatch,
}

impl Refusal {
    /// (HTTP status, error code, message) in the vocabulary of `service`.
    pub fn answer(&self, service: &str) -> (u16, &'static str, String) {
        let query = service == "sts";
        match self {
            Refusal::Missing => (
                if query { 403 } else { 400 },
                "MissingAuthenticationTokenException",
                "Missing Authentication Token".into(),
            ),
            Refusal::Incomplete(why) => (400, "IncompleteSignatureException", why.clone()),
            Refusal::UnknownKey if query => (
                403,
                "InvalidClientTokenId",
                "The security token included in the request is invalid.".into(),
            ),
            Refusal::UnknownKey => (
                400,
                "UnrecognizedClientException",
                "The security token included in the request is invalid.".into(),
            ),
            Refusal::Expired if query => (
                403,
                "ExpiredToken",
                "The security token included in the request is expired".into(),
            ),
            Refusal::Expired => (
                400,
                "ExpiredTokenException",
                "The security token included in the request is expired".into(),
            ),
            Refusal::Skewed(why) if query => (403, "SignatureDoesNotMatch", why.clone()),
            Refusal::Skewed(why) => (400, "InvalidSignatureException", why.clone()),
            Refusal::Mismatch => (
                if query { 403 } else { 400 },
                if query {
                    "SignatureDoesNotMatch"
                } else {
                    "InvalidSignatureException"
                },
                "The request signature we calculated does not match the signature you provided. \
                 Check your AWS Secret Access Key and signing method. Consult the service \
                 documentation for details."
                    .into(),
            ),
        }
    }
}

/// Parses `AWS4-HMAC-SHA256 Credential=AKID/DATE/REGION/SERVICE/aws4_request,
/// SignedHeaders=a;b, Signature=hex`.
pub fn parse_authorization(value: &str) -> Result<Authorization, Refusal> {
    let rest = value
        .strip_prefix("AWS4-HMAC-SHA256 ")
        .ok_or(Refusal::Missing)?;
    let (mut credential, mut signed, mut signature) = (None, None, None);
    for part in rest.split(',') {
        let part = part.trim();
        if let Some(v) = part.strip_prefix("Credential=") {
            credential = Some(v);
        } else if let Some(v) = part.strip_prefix("SignedHeaders=") {
            signed = Some(v);
        } else if let Some(v) = part.strip_prefix("Signature=") {
            signature = Some(v);
        }
    }
    let incomplete = |what: &str| {
        Refusal::Incomplete(format!(
            "Authorization header requires '{what}' parameter. Authorization={value}"
        ))
    };
    let credential = credential.ok_or_else(|| incomplete("Credential"))?;
    let signed = signed.ok_or_else(|| incomplete("SignedHeaders"))?;
    let signature = signature.ok_or_else(|| incomplete("Signature"))?;
    let scope: Vec<&str> = credential.split('/').collect();
    let [access_key, date, region, service, "aws4_request"] = scope[..] else {
        return Err(Refusal::Incomplete(format!(
            "Credential should be scoped to a valid region, not '{credential}'"
        )));
    };
    Ok(Authorization {
        access_key: access_key.to_string(),
        date: date.to_string(),
        region: region.to_string(),
        service: service.to_string(),
        signed_headers: signed.split(';').map(str::to_ascii_lowercase).collect(),
        signature: signature.to_ascii_lowercase(),
    })
}

/// A request as the verifier needs it.
pub struct Signed<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub query: &'a str,
    /// (lower-case name, value), every header of the request (`host` too).
    pub headers: &'a [(String, String)],
    pub body: &'a [u8],
}

impl Signed<'_> {
    fn header(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// The canonical request (step 1 of the specification).
pub fn canonical_request(request: &Signed, auth: &Authorization) -> String {
    let s3 = auth.service == "s3";
    let path = if request.path.is_empty() {
        "/"
    } else {
        request.path
    };
    // Every service but S3 encodes the (already encoded) path once more.
    let uri = if s3 {
        path.to_string()
    } else {
        path.split('/')
            .map(|segment| encode(segment, true))
            .collect::<Vec<_>>()
            .join("/")
    };
    let mut pairs: Vec<(String, String)> = request
        .query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (encode(&decode(k), true), encode(&decode(v), true))
        })
        .collect();
    pairs.sort();
    let query: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let mut headers = String::new();
    for name in &auth.signed_headers {
        let values: Vec<String> = request
            .header(name)
            .iter()
            .map(|v| v.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect();
        headers.push_str(name);
        headers.push(':');
        headers.push_str(&values.join(","));
        headers.push('\n');
    }
    let payload = match request.header("x-amz-content-sha256").first() {
        Some(declared) if s3 => declared.to_string(),
        _ => hex(&Sha256::digest(request.body)),
    };
    format!(
        "{}\n{uri}\n{}\n{headers}\n{}\n{payload}",
        request.method,
        query.join("&"),
        auth.signed_headers.join(";"),
    )
}

/// The signature of `request` with `secret` at `amz_date` (`20261206T190000Z`).
pub fn signature(request: &Signed, auth: &Authorization, amz_date: &str, secret: &str) -> String {
    let scope = format!(
        "{}/{}/{}/aws4_request",
        auth.date, auth.region, auth.service
    );
    let to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
        hex(&Sha256::digest(canonical_request(request, auth).as_bytes()))
    );
    let mut key = hmac(format!("AWS4{secret}").as_bytes(), auth.date.as_bytes());
    for part in [auth.region.as_str(), auth.service.as_str(), "aws4_request"] {
        key = hmac(&key, part.as_bytes());
    }
    hex(&hmac(&key, to_sign.as_bytes()))
}

/// Checks the signature and the parts of the request the signature must
/// cover (host, the date, a session token).
pub fn verify(
    request: &Signed,
    auth: &Authorization,
    secret: &str,
    amz_date: &str,
) -> Result<(), Refusal> {
    if !auth.signed_headers.iter().any(|h| h == "host") {
        return Err(Refusal::Incomplete(
            "'Host' must be a 'SignedHeader' in the AWS Authorization.".into(),
        ));
    }
    for must in ["x-amz-date", "x-amz-security-token"] {
        if !request.header(must).is_empty() && !auth.signed_headers.iter().any(|h| h == must) {
            return Err(Refusal::Incomplete(format!(
                "'{must}' must be a 'SignedHeader' in the AWS Authorization."
            )));
        }
    }
    if !amz_date.starts_with(&auth.date) {
        return Err(Refusal::Incomplete(format!(
            "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: '{}' != '{}'",
            auth.date,
            &amz_date[..amz_date.len().min(8)]
        )));
    }
    if signature(request, auth, amz_date, secret) == auth.signature {
        Ok(())
    } else {
        Err(Refusal::Mismatch)
    }
}

/// `20261206T190000Z` as seconds since the epoch.
pub fn parse_amz_date(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| text.get(r)?.parse::<i64>().ok();
    let (y, m, d) = (num(0..4)?, num(4..6)?, num(6..8)?);
    let (hh, mm, ss) = (num(9..11)?, num(11..13)?, num(13..15)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    Some(days_from_civil(y, m, d) * 86_400 + hh * 3600 + mm * 60 + ss)
}

/// Seconds since the epoch as `20261206T190000Z`.
pub fn format_amz_date(secs: i64) -> String {
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let t = secs.rem_euclid(86_400);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        t / 3600,
        t / 60 % 60,
        t % 60
    )
}

/// The refusal for a request signed at `signed` when the service's clock
/// says `now` (both seconds since the epoch), if it is over 5 minutes off.
pub fn check_skew(signed: i64, now: i64) -> Result<(), Refusal> {
    const LIMIT: i64 = 300;
    if signed < now - LIMIT {
        Err(Refusal::Skewed(format!(
            "Signature expired: {} is now earlier than {} ({} - 5 min.)",
            format_amz_date(signed),
            format_amz_date(now - LIMIT),
            format_amz_date(now)
        )))
    } else if signed > now + LIMIT {
        Err(Refusal::Skewed(format!(
            "Signature not yet current: {} is still later than {} ({} + 5 min.)",
            format_amz_date(signed),
            format_amz_date(now + LIMIT),
            format_amz_date(now)
        )))
    } else {
        Ok(())
    }
}

// Howard Hinnant's civil-date algorithms (public domain).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    // HMAC takes a key of any length.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// URI-encodes as SigV4 wants: unreserved characters kept, everything else
/// `%XX` (upper case); `/` kept unless `slash`.
fn encode(text: &str, slash: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'_' | b'.' | b'~')
            || (!slash && b == b'/')
        {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn decode(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => match u8::from_str_radix(&text[i + 1..i + 3], 16) {
                Ok(v) => {
                    out.push(v);
                    i += 3;
                    continue;
                }
                Err(_) => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// AWS's own example (the IAM user guide's "GET https://iam.amazonaws.com/?Action=ListUsers").
    #[test]
    fn aws_documented_example_verifies() {
        let headers = vec![
            (
                "content-type".to_string(),
                "application/x-www-form-urlencoded; charset=utf-8".to_string(),
            ),
            ("host".to_string(), "iam.amazonaws.com".to_string()),
            ("x-amz-date".to_string(), "20150830T123600Z".to_string()),
        ];
        let request = Signed {
            method: "GET",
            path: "/",
            query: "Action=ListUsers&Version=2010-05-08",
            headers: &headers,
            body: b"",
        };
        let auth = parse_authorization(
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/iam/aws4_request, \
             SignedHeaders=content-type;host;x-amz-date, \
             Signature=5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7",
        )
        .unwrap();
        let secret = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
        assert_eq!(verify(&request, &auth, secret, "20150830T123600Z"), Ok(()));
        assert_eq!(
            verify(&request, &auth, "wrong", "20150830T123600Z"),
            Err(Refusal::Mismatch)
        );
        let mut tampered = headers.clone();
        tampered[1].1 = "evil.example".into();
        let request = Signed {
            headers: &tampered,
            ..request
        };
        assert_eq!(
            verify(&request, &auth, secret, "20150830T123600Z"),
            Err(Refusal::Mismatch)
        );
    }

    #[test]
    fn dates_round_trip_and_skew_is_refused_past_five_minutes() {
        let t = parse_amz_date("20261206T190000Z").unwrap();
        assert_eq!(format_amz_date(t), "20261206T190000Z");
        assert_eq!(
            parse_amz_date("20000229T235959Z")
                .map(format_amz_date)
                .as_deref(),
            Some("20000229T235959Z")
        );
        assert_eq!(parse_amz_date("2026-12-06"), None);
        assert!(check_skew(t, t + 299).is_ok());
        let Err(Refusal::Skewed(why)) = check_skew(t, t + 900) else {
            panic!("skewed")
        };
        assert_eq!(
            why,
            "Signature expired: 20261206T190000Z is now earlier than 20261206T191000Z (20261206T191500Z - 5 min.)"
        );
        assert!(
            matches!(check_skew(t + 301, t), Err(Refusal::Skewed(w)) if w.starts_with("Signature not yet current"))
        );
    }

    #[test]
    fn a_malformed_authorization_is_incomplete() {
        assert_eq!(parse_authorization("Basic abc"), Err(Refusal::Missing));
        assert!(matches!(
            parse_authorization(
                "AWS4-HMAC-SHA256 Credential=A/B, SignedHeaders=host, Signature=00"
            ),
            Err(Refusal::Incomplete(_))
        ));
    }
}
