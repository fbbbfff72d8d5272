//! What real AWS does that no emulator does, through the tests' front
//! (`src/front/`): HTTPS from a private CA, SigV4 verified, session and
//! rotating credentials, a service clock 15 minutes off, and a refused
//! policy. Every other end-to-end test runs through the same front; these
//! test what only it can show: the front refuses what AWS refuses, and the
//! host lives with each condition without losing a record.

use distributary_e2e::front::{self, Certificate, ContainerCredentials, Front};
use distributary_e2e::*;
use std::time::{Duration, Instant};

const TIMEOUT: Duration = Duration::from_secs(120);

/// A Kinesis client of `endpoint` (a front) trusting the test CA.
async fn front_client(
    endpoint: &str,
    key: &str,
    secret: &str,
    token: Option<&str>,
) -> aws_sdk_kinesis::Client {
    let ca = front::tls::ca_file().unwrap();
    let http = distributary::tls::sdk_http_client(Some(&ca))
        .unwrap()
        .unwrap();
    let config = aws_sdk_kinesis::Config::builder()
        .behavior_version(aws_sdk_kinesis::config::BehaviorVersion::latest())
        .region(aws_sdk_kinesis::config::Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .http_client(http)
        .credentials_provider(aws_sdk_kinesis::config::Credentials::new(
            key,
            secret,
            token.map(str::to_string),
            None,
            "aws-shaped",
        ))
        .build();
    aws_sdk_kinesis::Client::from_conf(config)
}

async fn code_of(client: &aws_sdk_kinesis::Client) -> Option<String> {
    use aws_sdk_kinesis::error::ProvideErrorMetadata;
    match client.list_streams().send().await {
        Ok(_) => None,
        Err(e) => Some(e.code().unwrap_or("no code").to_string()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_front_refuses_what_aws_refuses_and_passes_a_good_signature() {
    let kinesis = LocalKinesis::start().unwrap();
    let e = &kinesis.endpoint;
    assert_eq!(
        code_of(&front_client(e, "test", "test", None).await).await,
        None
    );
    assert_eq!(
        code_of(&front_client(e, "test", "wrong secret", None).await)
            .await
            .as_deref(),
        Some("InvalidSignatureException"),
        "a wrong secret is refused"
    );
    assert_eq!(
        code_of(&front_client(e, "AKIDUNKNOWN", "x", None).await)
            .await
            .as_deref(),
        Some("UnrecognizedClientException")
    );
    let soon = std::time::SystemTime::now() + Duration::from_secs(2);
    front::creds::register(
        "ASIASESSION",
        front::creds::Known {
            secret: "session-secret".into(),
            token: Some("the-token".into()),
            expires: Some(soon),
            revoked: false,
        },
    );
    let session = front_client(e, "ASIASESSION", "session-secret", Some("the-token")).await;
    assert_eq!(
        code_of(&session).await,
        None,
        "a session credential with its token"
    );
    assert_eq!(
        code_of(&front_client(e, "ASIASESSION", "session-secret", None).await)
            .await
            .as_deref(),
        Some("UnrecognizedClientException"),
        "a session key without its token"
    );
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(
        code_of(&session).await.as_deref(),
        Some("ExpiredTokenException")
    );
    let refused = kinesis.front.refused();
    assert!(refused["InvalidSignatureException"] >= 1, "{refused:?}");
    assert!(kinesis.front.verified()["kinesis"] >= 2);
}

/// A one-shard source `input` with `n` records and an output `out`; the
/// config writes through `front_endpoint`.
async fn source_with(kinesis: &LocalKinesis, n: usize) -> (aws_sdk_kinesis::Client, Vec<Rec>) {
    let client = kinesis.client().await;
    create_stream(&client, "input", 2).await.unwrap();
    create_stream(&client, "out", 1).await.unwrap();
    let records = numbered_records(n, 20, "");
    put_all(&client, "input", &records).await.unwrap();
    (client, records)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_or_misnamed_certificate_fails_check_and_run_within_seconds() {
    let kinesis = LocalKinesis::start().unwrap();
    let (client, _) = source_with(&kinesis, 20).await;
    let dir = TestDir::new().unwrap();
    let good = dir
        .write_config(
            "good.toml",
            &config::simple(&kinesis.endpoint, &[("out", "out")], ""),
        )
        .unwrap();
    check_ok(&good);
    for (certificate, cause) in [
        (Certificate::UnknownCa, "UnknownIssuer"),
        (Certificate::WrongName, "not valid for name"),
    ] {
        let bad = Front::start_with(&kinesis.plain, certificate).unwrap();
        let path = dir
            .write_config(
                &format!("{certificate:?}.toml"),
                &config::simple(&bad.endpoint, &[("out", "out")], ""),
            )
            .unwrap();
        let started = Instant::now();
        let out = distributary_command()
            .args(["check", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "check: {stderr}");
        assert!(started.elapsed() < Duration::from_secs(10));
        let port = format!("localhost:{}", bad.port);
        assert!(
            stderr.contains(&port) && stderr.contains(cause),
            "check names the endpoint and the cause: {stderr}"
        );

        let started = Instant::now();
        let mut running = Distributary::start(&path).unwrap();
        let status = running.wait(Duration::from_secs(20)).unwrap();
        let log = running.log_text();
        assert_eq!(status.code(), Some(2), "run: {log}");
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "within seconds"
        );
        assert!(
            log.contains(&format!("{}", bad.port)) && log.contains(cause),
            "run names the endpoint and the cause: {log}"
        );
        assert!(bad.verified().is_empty(), "no request got through");
    }
    assert!(
        read_all(&client, "out").await.unwrap().is_empty(),
        "nothing delivered"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_credentials_deliver_with_their_token() {
    let kinesis = LocalKinesis::start().unwrap();
    let (client, records) = source_with(&kinesis, 300).await;
    front::creds::register(
        "ASIASESSIONRUN",
        front::creds::Known {
            secret: "run-secret".into(),
            token: Some("run-token".into()),
            expires: Some(std::time::SystemTime::now() + Duration::from_secs(3600)),
            revoked: false,
        },
    );
    let dir = TestDir::new().unwrap();
    let path = dir
        .write_config(
            "session.toml",
            &config::simple(&kinesis.endpoint, &[("out", "out")], ""),
        )
        .unwrap();
    let running = Distributary::start_with_env(
        &path,
        &[
            ("AWS_ACCESS_KEY_ID", "ASIASESSIONRUN"),
            ("AWS_SECRET_ACCESS_KEY", "run-secret"),
            ("AWS_SESSION_TOKEN", "run-token"),
        ],
    )
    .unwrap();
    let got = wait_for_settled(&client, "out", records.len(), TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", running.log_text()));
    assert_exactly_once_in_key_order("out", &records, &got);
    assert!(
        kinesis.front.refused().is_empty(),
        "{:?}",
        kinesis.front.refused()
    );
    running.stop_cleanly();
}

/// Writes `records` to `input` over `spread`, in chunks.
async fn produce_over(client: &aws_sdk_kinesis::Client, records: &[Rec], spread: Duration) {
    let chunks = records.chunks(50).count().max(1) as u32;
    for chunk in records.chunks(50) {
        put_all(client, "input", chunk).await.unwrap();
        tokio::time::sleep(spread / chunks).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotating_container_credentials_deliver_everything_and_a_revoked_one_loses_nothing() {
    let kinesis = LocalKinesis::start().unwrap();
    let (client, first) = source_with(&kinesis, 0).await;
    assert!(first.is_empty());
    // New keys every 30 s, each valid for 60 s: a run of 100 s lives
    // through at least three rotations. DISTRIBUTARY_ROTATION_SECS=600 makes
    // it the 10-minute run, which scripts/test runs beside the rest of the
    // suite.
    let run_secs: u64 = std::env::var("DISTRIBUTARY_ROTATION_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100)
        .clamp(60, 1800);
    let creds =
        ContainerCredentials::start(Duration::from_secs(30), Duration::from_secs(60)).unwrap();
    let dir = TestDir::new().unwrap();
    let path = dir
        .write_config(
            "rotating.toml",
            &config::simple(&kinesis.endpoint, &[("out", "out")], ""),
        )
        .unwrap();
    let uri = creds.uri.clone();
    let running = Distributary::start_without_static_keys(
        &path,
        &[("AWS_CONTAINER_CREDENTIALS_FULL_URI", &uri)],
    )
    .unwrap();
    let records = numbered_records(2000, 50, "");
    let (rotating, revoked) = records.split_at(1600);
    produce_over(&client, rotating, Duration::from_secs(run_secs)).await;
    let got = wait_for_count(&client, "out", rotating.len(), TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", running.log_text()));
    assert_exactly_once_in_key_order("out", rotating, &got);
    let (issued, served) = creds.counts();
    // Each key is valid for 60 s, so a run that never failed a request must
    // have fetched a fresh one at least once a minute.
    assert!(
        issued > run_secs / 60,
        "keys made: {issued} in {run_secs} s (answers {served})"
    );
    assert!(
        kinesis.front.refused().is_empty(),
        "no request refused across rotations: {:?}",
        kinesis.front.refused()
    );

    // A credential revoked while in use: refused, fetched again, nothing lost.
    creds.revoke_current();
    produce_over(&client, revoked, Duration::from_secs(5)).await;
    let got = wait_for_settled(&client, "out", records.len(), TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", running.log_text()));
    assert_exactly_once_in_key_order("out", &records, &got);
    println!(
        "rotating credentials: {issued} keys over {run_secs} s, refused after the revocation: {:?}",
        kinesis.front.refused()
    );
    running.stop_cleanly();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifteen_minutes_of_clock_skew_either_way_deliver_everything() {
    let kinesis = LocalKinesis::start().unwrap();
    let (client, _) = source_with(&kinesis, 0).await;
    kinesis.front.set_skew_secs(15 * 60);
    let dir = TestDir::new().unwrap();
    let path = dir
        .write_config(
            "skew.toml",
            &config::simple(&kinesis.endpoint, &[("out", "out")], ""),
        )
        .unwrap();
    let running = Distributary::start(&path).unwrap();
    let records = numbered_records(600, 30, "");
    let (ahead, behind) = records.split_at(300);
    put_all(&client, "input", ahead).await.unwrap();
    wait_for_count(&client, "out", ahead.len(), TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", running.log_text()));
    kinesis.front.set_skew_secs(-15 * 60);
    put_all(&client, "input", behind).await.unwrap();
    let got = wait_for_settled(&client, "out", records.len(), TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", running.log_text()));
    assert_exactly_once_in_key_order("out", &records, &got);
    let refused = kinesis.front.refused();
    assert!(
        refused
            .get("InvalidSignatureException")
            .is_some_and(|n| *n >= 2),
        "the skew was met (and corrected) each way: {refused:?}"
    );
    running.stop_cleanly();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_output_refused_access_stalls_alone_and_resumes_when_the_policy_is_restored() {
    let kinesis = LocalKinesis::start().unwrap();
    let dir = TestDir::new().unwrap();
    // Started (its checks passed); then the policy loses kinesis:PutRecords on out-b.
    let (client, running, port) = two_outputs(&kinesis, &dir).await;
    kinesis.front.deny(Some(("PutRecords", "out-b")));
    let records = numbered_records(400, 40, "");
    put_all(&client, "input", &records).await.unwrap();
    let got = wait_for_settled(&client, "out-a", records.len(), TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", running.log_text()));
    assert_exactly_once_in_key_order("out-a", &records, &got);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(read_all(&client, "out-b").await.unwrap().is_empty());
    let metrics = scrape_metrics(port).unwrap_or_default();
    let refusals = metric(
        &metrics,
        "distributary_output_errors_total{output=\"b\",code=\"AccessDeniedException\"}",
    )
    .unwrap_or(0.0);
    assert!(refusals >= 1.0, "counted per code:\n{metrics}");
    assert!(
        running.log_text().contains("PutRecords refused"),
        "logged:\n{}",
        running.log_text()
    );
    assert_eq!(http_get(port, "/healthz").map(|(s, _)| s), Some(200));

    kinesis.front.deny(None);
    let got = wait_for_settled(&client, "out-b", records.len(), TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", running.log_text()));
    assert_exactly_once_in_key_order("out-b", &records, &got);
    running.stop_cleanly();
}

/// A source and two outputs (`to-a`, `to-b`: one pipeline each) on
/// kinesis-local behind its front; the process started and ready.
async fn two_outputs(
    kinesis: &LocalKinesis,
    dir: &TestDir,
) -> (aws_sdk_kinesis::Client, Distributary, u16) {
    let client = kinesis.client().await;
    for (name, shards) in [("input", 2), ("out-a", 1), ("out-b", 1)] {
        create_stream(&client, name, shards).await.unwrap();
    }
    let port = free_port_pair();
    let e = &kinesis.endpoint;
    let path = dir
        .write_config(
            "two.toml",
            &format!(
                "[sources.input]\nstream = \"input\"\nendpoint_url = \"{e}\"\npoll_interval_ms = 200\n\n\
                 [outputs.a]\nstream = \"out-a\"\nendpoint_url = \"{e}\"\n\n\
                 [outputs.b]\nstream = \"out-b\"\nendpoint_url = \"{e}\"\n\n\
                 [server]\nlisten = \"127.0.0.1:{port}\"\n\n[checkpoint]\npath = \"state\"\n\n\
                 [[pipelines]]\nname = \"to-a\"\nsource = \"input\"\noutputs = [\"a\"]\n\n\
                 [[pipelines]]\nname = \"to-b\"\nsource = \"input\"\noutputs = [\"b\"]\n"
            ),
        )
        .unwrap();
    let running = Distributary::start(&path).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while http_get(port, "/readyz").map(|(s, _)| s) != Some(200) {
        assert!(Instant::now() < deadline, "ready\n{}", running.log_text());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (client, running, port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iterators_expiring_mid_run_lose_and_repeat_nothing() {
    let kinesis = LocalKinesis::start().unwrap();
    let dir = TestDir::new().unwrap();
    let (client, running, port) = two_outputs(&kinesis, &dir).await;
    let records = numbered_records(600, 30, "");
    put_all(&client, "input", &records[..300]).await.unwrap();
    wait_for_settled(&client, "out-a", 300, TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", running.log_text()));
    // Every shard's next reads find their iterators expired (as after a
    // stall of more than 5 minutes), while the rest is written.
    kinesis.front.expire_iterators(6);
    put_all(&client, "input", &records[300..]).await.unwrap();
    for out in ["out-a", "out-b"] {
        let got = wait_for_settled(&client, out, records.len(), TIMEOUT)
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", running.log_text()));
        assert_exactly_once_in_key_order(out, &records, &got);
    }
    assert_eq!(
        kinesis.front.refused().get("ExpiredIteratorException"),
        Some(&6),
        "the front expired them"
    );
    let metrics = scrape_metrics(port).unwrap_or_default();
    assert_eq!(
        metric(
            &metrics,
            "distributary_source_read_errors_total{source=\"input\",code=\"ExpiredIteratorException\"}"
        ),
        Some(6.0),
        "counted per code:\n{metrics}"
    );
    assert!(
        running.log_text().contains("shard iterator expired"),
        "logged:\n{}",
        running.log_text()
    );
    running.stop_cleanly();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_output_stalls_alone_and_resumes_once_it_is_created_again() {
    let kinesis = LocalKinesis::start().unwrap();
    let dir = TestDir::new().unwrap();
    let (client, running, port) = two_outputs(&kinesis, &dir).await;
    client
        .delete_stream()
        .stream_name("out-b")
        .send()
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while client
        .describe_stream_summary()
        .stream_name("out-b")
        .send()
        .await
        .is_ok()
    {
        assert!(Instant::now() < deadline, "out-b still exists");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let records = numbered_records(400, 40, "");
    put_all(&client, "input", &records).await.unwrap();
    let got = wait_for_settled(&client, "out-a", records.len(), TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", running.log_text()));
    assert_exactly_once_in_key_order("out-a", &records, &got);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let metrics = scrape_metrics(port).unwrap_or_default();
        let counted = metric(
            &metrics,
            "distributary_output_errors_total{output=\"b\",code=\"ResourceNotFoundException\"}",
        );
        if counted.is_some_and(|n| n >= 1.0) {
            break;
        }
        assert!(Instant::now() < deadline, "counted per code:\n{metrics}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        running.log_text().contains("ResourceNotFoundException"),
        "logged:\n{}",
        running.log_text()
    );
    // Its owner creates it again: what was routed to it meanwhile arrives.
    create_stream(&client, "out-b", 1).await.unwrap();
    let got = wait_for_settled(&client, "out-b", records.len(), TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", running.log_text()));
    assert_exactly_once_in_key_order("out-b", &records, &got);
    running.stop_cleanly();
}
