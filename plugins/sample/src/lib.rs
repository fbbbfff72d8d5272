//! `sample`: sends a fraction of the records to some outputs, chosen by
//! partition key, and optionally every record to others.
//!
//! ```toml
//! plugin_config = { fraction = 0.01, outputs = ["sampled"], all = ["full-copy"] }
//! ```
//! A record is in the sample when the MD5 of its partition key (the hash
//! Kinesis itself places keys by), read as a number in [0, 1), is below
//! `fraction`. So the choice is deterministic: the same key is always in or
//! always out, in every run and every instance, and a key's records stay
//! together (and in order) in the sample. `outputs`: where sampled records
//! go (default: every output not in `all`). `all`: outputs that get every
//! record (default: none).

use distributary_plugin_sdk::{Batch, Decisions, Init, Plugin, export_plugin};
use md5::{Digest, Md5};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    fraction: f64,
    outputs: Option<Vec<String>>,
    #[serde(default)]
    all: Vec<String>,
}

pub struct Sample {
    /// Keys whose hash (top 64 bits) is below this are sampled.
    threshold: u64,
    everything: bool,
    sampled: Vec<u32>,
    all: Vec<u32>,
}

impl Sample {
    pub fn new(init: &Init) -> Result<Self, String> {
        let config: Config = init.config()?;
        if !(0.0..=1.0).contains(&config.fraction) {
            return Err(format!(
                "plugin_config.fraction: {} is not between 0 and 1",
                config.fraction
            ));
        }
        let all = init.outputs_or_all(Some(&config.all), "all")?;
        let sampled = match &config.outputs {
            Some(names) => init.outputs_or_all(Some(names), "outputs")?,
            None => (0..init.outputs.len() as u32)
                .filter(|o| !all.contains(o))
                .collect(),
        };
        Ok(Sample {
            threshold: (config.fraction * u64::MAX as f64) as u64,
            everything: config.fraction >= 1.0,
            sampled,
            all,
        })
    }

    /// Whether records with this partition key are in the sample.
    pub fn sampled(&self, partition_key: &str) -> bool {
        if self.everything {
            return true;
        }
        let hash = Md5::digest(partition_key.as_bytes());
        let mut top = [0u8; 8];
        top.copy_from_slice(&hash[..8]);
        u64::from_be_bytes(top) < self.threshold
    }
}

impl Plugin for Sample {
    fn init(init: Init) -> Result<Self, String> {
        Sample::new(&init)
    }

    fn route(&mut self, batch: &Batch, out: &mut Decisions) -> Result<(), String> {
        for record in batch.records() {
            out.deliver_each(record.index, &self.all);
            if self.sampled(record.partition_key) {
                out.deliver_each(record.index, &self.sampled);
            }
        }
        Ok(())
    }
}

export_plugin!(Sample);

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(config: &str) -> Result<Sample, String> {
        Sample::new(&Init {
            config: config.into(),
            outputs: vec!["s".into(), "full".into()],
        })
    }

    #[test]
    fn the_sample_is_about_the_fraction_and_the_same_every_time() {
        let s = sample(r#"{"fraction":0.1,"all":["full"]}"#).unwrap();
        assert_eq!((s.sampled.clone(), s.all.clone()), (vec![0], vec![1]));
        let keys: Vec<String> = (0..20_000).map(|i| format!("user-{i}")).collect();
        let n = keys.iter().filter(|k| s.sampled(k)).count();
        assert!((1_800..=2_200).contains(&n), "{n} of 20000 sampled at 0.1");
        let again = sample(r#"{"fraction":0.1}"#).unwrap();
        assert!(keys.iter().all(|k| s.sampled(k) == again.sampled(k)));
        // A larger fraction samples a superset.
        let more = sample(r#"{"fraction":0.2}"#).unwrap();
        assert!(keys.iter().all(|k| !s.sampled(k) || more.sampled(k)));
    }

    #[test]
    fn zero_and_one_are_none_and_all() {
        let none = sample(r#"{"fraction":0}"#).unwrap();
        let all = sample(r#"{"fraction":1}"#).unwrap();
        for i in 0..1000 {
            let k = format!("k{i}");
            assert!(!none.sampled(&k));
            assert!(all.sampled(&k));
        }
    }

    #[test]
    fn configuration_errors_name_the_key() {
        let e = sample(r#"{"fraction":1.5}"#).err().unwrap();
        assert!(e.starts_with("plugin_config.fraction"), "{e}");
        let e = sample(r#"{"fraction":0.5,"all":["x"]}"#).err().unwrap();
        assert!(e.starts_with("plugin_config.all"), "{e}");
        assert!(sample(r#"{}"#).err().unwrap().contains("fraction"));
    }
}
