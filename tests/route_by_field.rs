//! route_by_field end to end: each record lands only in the output its JSON
//! field selects; unknown values go to the default output; non-JSON records too.

use distributary_e2e::*;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_record_lands_only_where_its_field_says() {
    let (kinesis, client) = kinesis_with_streams(&[("input", 2)]).await.unwrap();
    for s in ["tenant-a", "tenant-b", "others"] {
        create_stream(&client, s, 1).await.unwrap();
    }
    let tenants = ["a", "b", "c", "d"];
    let mut records: Vec<Rec> = (0..600)
        .map(|i| {
            let t = tenants[i % tenants.len()];
            Rec {
                key: format!("user-{}", i % 50),
                data: format!(r#"{{"n":{i},"tenant":"{t}","x":{{"tenant":"a"}}}}"#).into_bytes(),
            }
        })
        .collect();
    records.push(Rec {
        key: "raw".into(),
        data: b"not json at all".to_vec(),
    });
    records.push(Rec {
        key: "raw".into(),
        data: br#"{"no_tenant":true}"#.to_vec(),
    });
    put_all(&client, "input", &records).await.unwrap();

    let dir = TestDir::new().unwrap();
    let config = dir
        .write_config(
            "route.toml",
            &config::route_by_tenant(&kinesis.endpoint, &plugin("route_by_field")),
        )
        .unwrap();
    let running = Distributary::start(&config).unwrap();

    let field = |r: &Rec| -> Option<String> {
        let v: serde_json::Value = serde_json::from_slice(&r.data).ok()?;
        v.get("tenant")?.as_str().map(str::to_string)
    };
    let want_a: Vec<Rec> = records
        .iter()
        .filter(|r| field(r).as_deref() == Some("a"))
        .cloned()
        .collect();
    let want_b: Vec<Rec> = records
        .iter()
        .filter(|r| field(r).as_deref() == Some("b"))
        .cloned()
        .collect();
    let want_rest: Vec<Rec> = records
        .iter()
        .filter(|r| !matches!(field(r).as_deref(), Some("a") | Some("b")))
        .cloned()
        .collect();
    assert_eq!(want_a.len() + want_b.len() + want_rest.len(), records.len());
    for (stream, want) in [
        ("tenant-a", &want_a),
        ("tenant-b", &want_b),
        ("others", &want_rest),
    ] {
        let got = wait_for_count(&client, stream, want.len(), Duration::from_secs(120))
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", running.log_text()));
        // Exactly the wanted records: nothing routed elsewhere leaks in.
        assert_eq!(
            got.len(),
            want.len(),
            "{stream} holds records routed elsewhere"
        );
        assert_exactly_once_in_key_order(stream, want, &got);
    }
    running.stop_cleanly();
}
