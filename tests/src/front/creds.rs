//! The credentials the fronts accept, shared by every front of the test
//! process (one request may pass two fronts): static keys, session
//! credentials (with a token and an expiry), credentials learned from STS
//! answers, and the rotating credentials of a container credentials
//! endpoint (`ContainerCredentials`, what ECS and EKS Pod Identity serve at
//! `AWS_CONTAINER_CREDENTIALS_FULL_URI`).

use anyhow::Result;
use bytes::Bytes;
use http_body_util::Full;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

/// The access key and secret every test uses unless it says otherwise.
pub const TEST_KEY: &str = "test";
pub const TEST_SECRET: &str = "test";

/// One credential the fronts know.
#[derive(Debug, Clone)]
pub struct Known {
    pub secret: String,
    /// Required as `x-amz-security-token` when set.
    pub token: Option<String>,
    /// Refused as expired from then on.
    pub expires: Option<SystemTime>,
    pub revoked: bool,
}

fn registry() -> &'static Mutex<HashMap<String, Known>> {
    static KNOWN: OnceLock<Mutex<HashMap<String, Known>>> = OnceLock::new();
    KNOWN.get_or_init(|| {
        let mut known = HashMap::new();
        known.insert(
            TEST_KEY.to_string(),
            Known {
                secret: TEST_SECRET.to_string(),
                token: None,
                expires: None,
                revoked: false,
            },
        );
        Mutex::new(known)
    })
}

/// Makes `access_key` known.
pub fn register(access_key: &str, known: Known) {
    if let Ok(mut map) = registry().lock() {
        map.insert(access_key.to_string(), known);
    }
}

/// From now on, `access_key` is refused as expired (a revoked session).
pub fn revoke(access_key: &str) {
    if let Ok(mut map) = registry().lock()
        && let Some(k) = map.get_mut(access_key)
    {
        k.revoked = true;
    }
}

pub fn lookup(access_key: &str) -> Option<Known> {
    registry().lock().ok()?.get(access_key).cloned()
}

/// Learns the credentials in an STS answer (AssumeRole,
/// AssumeRoleWithWebIdentity, GetSessionToken: XML with `AccessKeyId`,
/// `SecretAccessKey`, `SessionToken`, `Expiration`).
pub fn learn_from_sts(answer: &str) {
    let field = |name: &str| {
        let open = format!("<{name}>");
        let start = answer.find(&open)? + open.len();
        let end = answer[start..].find(&format!("</{name}>"))? + start;
        Some(answer[start..end].trim().to_string())
    };
    let (Some(key), Some(secret)) = (field("AccessKeyId"), field("SecretAccessKey")) else {
        return;
    };
    let expires = field("Expiration").and_then(|e| {
        aws_smithy_types::DateTime::from_str(&e, aws_smithy_types::date_time::Format::DateTime)
            .ok()
            .and_then(|d| SystemTime::try_from(d).ok())
    });
    register(
        &key,
        Known {
            secret,
            token: field("SessionToken"),
            expires,
            revoked: false,
        },
    );
}

/// A container credentials endpoint on 127.0.0.1: each answer is the
/// current credential; a new one is made every `rotate_every`, and each is
/// valid for `valid_for` from when it was made (then the fronts refuse it
/// as expired).
pub struct ContainerCredentials {
    /// For `AWS_CONTAINER_CREDENTIALS_FULL_URI`.
    pub uri: String,
    state: Arc<Mutex<Rotation>>,
    _server: super::Server,
}

struct Rotation {
    rotate_every: Duration,
    valid_for: Duration,
    current: Option<(String, SystemTime)>,
    issued: u64,
    served: u64,
}

impl Rotation {
    fn current(&mut self) -> (String, Known) {
        let now = SystemTime::now();
        let stale = match &self.current {
            Some((_, made)) => now.duration_since(*made).unwrap_or_default() >= self.rotate_every,
            None => true,
        };
        if stale {
            self.issued += 1;
            let key = format!("ASIAROTATING{:06}{:04}", self.issued, fastrand::u16(..));
            register(
                &key,
                Known {
                    secret: format!("secret-{}", fastrand::u64(..)),
                    token: Some(format!("token-{}", fastrand::u64(..))),
                    expires: Some(now + self.valid_for),
                    revoked: false,
                },
            );
            self.current = Some((key, now));
        }
        self.served += 1;
        let key = self
            .current
            .as_ref()
            .map(|(k, _)| k.clone())
            .unwrap_or_default();
        let known = lookup(&key).unwrap_or(Known {
            secret: String::new(),
            token: None,
            expires: None,
            revoked: true,
        });
        (key, known)
    }
}

impl ContainerCredentials {
    pub fn start(rotate_every: Duration, valid_for: Duration) -> Result<Self> {
        let state = Arc::new(Mutex::new(Rotation {
            rotate_every,
            valid_for,
            current: None,
            issued: 0,
            served: 0,
        }));
        let shared = state.clone();
        let server = super::Server::plain(move |_request| {
            let state = shared.clone();
            async move {
                let (key, known) = match state.lock() {
                    Ok(mut s) => s.current(),
                    Err(_) => return super::status(500, "poisoned"),
                };
                let expiration = known
                    .expires
                    .map(|e| {
                        aws_smithy_types::DateTime::from(e)
                            .fmt(aws_smithy_types::date_time::Format::DateTime)
                            .unwrap_or_default()
                    })
                    .unwrap_or_default();
                let body = serde_json::json!({
                    "AccessKeyId": key,
                    "SecretAccessKey": known.secret,
                    "Token": known.token,
                    "Expiration": expiration,
                    "RoleArn": "arn:aws:iam::123456789012:role/distributary-tests",
                });
                http::Response::builder()
                    .header("content-type", "application/json")
                    .body(Full::new(Bytes::from(body.to_string())))
                    .map_err(anyhow::Error::from)
            }
        })?;
        Ok(ContainerCredentials {
            uri: format!(
                "http://127.0.0.1:{}/v2/credentials/distributary",
                server.port
            ),
            state,
            _server: server,
        })
    }

    /// Credentials made so far, and answers served.
    pub fn counts(&self) -> (u64, u64) {
        self.state.lock().map_or((0, 0), |s| (s.issued, s.served))
    }

    /// Revokes the credential being served now; the next answer is a new one.
    pub fn revoke_current(&self) {
        if let Ok(mut s) = self.state.lock()
            && let Some((key, _)) = s.current.take()
        {
            revoke(&key);
        }
    }

    /// The environment a child process needs to use this endpoint (and not
    /// the tests' static keys).
    pub fn env(&self) -> Vec<(String, String)> {
        vec![(
            "AWS_CONTAINER_CREDENTIALS_FULL_URI".into(),
            self.uri.clone(),
        )]
    }
}
