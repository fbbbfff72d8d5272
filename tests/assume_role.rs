//! Cross-account outputs: an output with `role_arn` and `external_id`
//! assumes the role through STS (moto's, on loopback, reached through a
//! recording proxy) with that external id, and its PutRecords are signed
//! with the credentials STS returned (seen through a second proxy in front
//! of Kinesis: the access key id in the Authorization header is the assumed
//! one, not the process's own).

use distributary_e2e::fault::FaultProxy;
use distributary_e2e::*;
use std::time::Duration;

const ROLE: &str = "arn:aws:iam::123456789012:role/fanout-writer";
const EXTERNAL_ID: &str = "tenant-42-external";

/// The text between `<tag>` and `</tag>` in an XML answer.
fn xml_field<'a>(xml: &'a str, tag: &str) -> Option<&'a str> {
    let open = format!("<{tag}>");
    let start = xml.find(&open)? + open.len();
    let end = xml[start..].find(&format!("</{tag}>"))? + start;
    Some(&xml[start..end])
}

/// The access key id of a SigV4 Authorization header.
fn access_key_of(authorization: &str) -> Option<&str> {
    let credential = authorization.split("Credential=").nth(1)?;
    credential.split('/').next()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_output_with_role_arn_signs_with_the_assumed_credentials() {
    let (kinesis, client) = kinesis_with_streams(&[("input", 1), ("out", 1)])
        .await
        .unwrap();
    let moto = LocalDynamo::start_moto().unwrap();
    let sts = FaultProxy::start(&moto.endpoint, 0.0).await.unwrap();
    let outputs = FaultProxy::start(&kinesis.endpoint, 0.0).await.unwrap();
    let dir = TestDir::new().unwrap();
    let text = config::split_endpoints(&kinesis.endpoint, &outputs.endpoint, &[("o", "out")], "")
        .replace(
            "[outputs.o]\n",
            &format!("[outputs.o]\nrole_arn = \"{ROLE}\"\nexternal_id = \"{EXTERNAL_ID}\"\n"),
        );
    let config = dir.write_config("assume.toml", &text).unwrap();
    let running =
        Distributary::start_with_env(&config, &[("AWS_ENDPOINT_URL_STS", &sts.endpoint)]).unwrap();
    let records = numbered_records(50, 5, "");
    put_all(&client, "input", &records).await.unwrap();
    let got = wait_for_settled(&client, "out", records.len(), Duration::from_secs(60))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", running.log_text()));
    assert_exactly_once_in_key_order("out", &records, &got);
    running.stop_cleanly();

    let assumed: Vec<_> = sts
        .seen()
        .into_iter()
        .filter(|c| c.body.contains("Action=AssumeRole"))
        .collect();
    assert!(!assumed.is_empty(), "the role was assumed through STS");
    // Every AssumeRole carries the role and the external id; the keys it
    // returned are the only ones PutRecords may be signed with.
    let mut keys = Vec::new();
    for call in &assumed {
        assert!(
            call.body.contains(&format!("ExternalId={EXTERNAL_ID}")),
            "AssumeRole carries the external id: {}",
            call.body
        );
        assert!(
            call.body
                .contains("RoleArn=arn%3Aaws%3Aiam%3A%3A123456789012%3Arole%2Ffanout-writer"),
            "AssumeRole names the role: {}",
            call.body
        );
        let key = xml_field(&call.answer, "AccessKeyId")
            .unwrap_or_else(|| panic!("no AccessKeyId in {}", call.answer))
            .to_string();
        assert_ne!(key, "test", "STS returned the process's own key");
        keys.push(key);
    }
    let puts: Vec<_> = outputs
        .seen()
        .into_iter()
        .filter(|c| c.target.ends_with(".PutRecords"))
        .collect();
    assert!(!puts.is_empty(), "PutRecords went through the proxy");
    for put in &puts {
        let signed_with = access_key_of(&put.authorization).unwrap_or_default();
        assert!(
            keys.iter().any(|k| k == signed_with),
            "PutRecords signed with an assumed key ({keys:?}): {}",
            put.authorization
        );
    }
    // The source is read with the process's own credentials.
    drop(moto);
}
