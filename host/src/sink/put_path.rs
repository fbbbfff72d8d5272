//! Which PutRecords path an output uses: the direct one (`direct.rs`, the
//! default) or the SDK's (`service::KinesisTransport`), chosen once per
//! output from the environment (`DISTRIBUTARY_PUT_RECORDS=sdk`).

use super::direct::DirectTransport;
use super::service::{Entry, KinesisTransport, PutOutcome, Transport};
use crate::kinesis::StreamRef;
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_sdk_kinesis::Client;

/// The PutRecords path of the outputs: direct (the default), or the SDK's
/// when `DISTRIBUTARY_PUT_RECORDS=sdk` is set (to compare them, or as a way
/// out should the direct path meet an endpoint it does not handle).
pub enum KinesisPut {
    Direct(Box<DirectTransport>),
    Sdk(KinesisTransport),
}

impl KinesisPut {
    /// The path chosen by the environment, for `stream` through `client`.
    pub async fn new(
        client: &Client,
        credentials: Option<&SharedCredentialsProvider>,
        endpoint_url: Option<String>,
        stream: &StreamRef,
        ca_bundle: Option<&std::path::Path>,
    ) -> anyhow::Result<KinesisPut> {
        let sdk = std::env::var("DISTRIBUTARY_PUT_RECORDS").is_ok_and(|v| v == "sdk");
        let Some(credentials) = credentials.filter(|_| !sdk) else {
            // Without a credentials provider the SDK's calls fail with its
            // own clear error, as every other call of this client does.
            return Ok(KinesisPut::Sdk(KinesisTransport(client.clone())));
        };
        let endpoint_url = endpoint_url
            .or_else(|| std::env::var("AWS_ENDPOINT_URL_KINESIS").ok())
            .or_else(|| std::env::var("AWS_ENDPOINT_URL").ok())
            .filter(|u| !u.is_empty());
        Ok(KinesisPut::Direct(Box::new(
            DirectTransport::new(client, credentials.clone(), endpoint_url, stream, ca_bundle)
                .await?,
        )))
    }
}

impl Transport for KinesisPut {
    async fn put_records(&self, stream: &StreamRef, entries: Vec<Entry>) -> PutOutcome {
        match self {
            KinesisPut::Direct(t) => t.put_records(stream, entries).await,
            KinesisPut::Sdk(t) => t.put_records(stream, entries).await,
        }
    }
}
