//! `filter`: keeps or drops JSON records by conditions on their fields.
//!
//! ```toml
//! plugin_config = { conditions = [
//!     { field = "type", equals = "order" },
//!     { field = "amount", gte = 100 },
//!     { field = "region", in = ["eu", "us"] },
//!     { field = "user.id", exists = true },
//!     { field = "sku", prefix = "A-" },
//! ], match = "all", action = "keep", outputs = ["orders"], non_json = "drop" }
//! ```
//! A condition names a field path (see the SDK's `json` module) and one or
//! more tests, all of which must hold: `equals` (any JSON value), `in` (a
//! list of values), `exists` (true: present and not null; false: absent or
//! null), `prefix` (string fields), `gt`/`gte`/`lt`/`lte` (numeric fields).
//! `match`: `all` (default) or `any` of the conditions. `action`: `keep`
//! (default) sends matching records on and drops the rest; `drop` does the
//! opposite. `outputs`: where records that pass go (default: every output of
//! the pipeline). `non_json`: `drop` (default) or `keep` records that are not
//! JSON.

use distributary_plugin_sdk::json::Path;
use distributary_plugin_sdk::{Batch, Decisions, Init, Plugin, export_plugin};
use serde::Deserialize;
use serde_json::Value;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    conditions: Vec<ConditionConfig>,
    #[serde(default, rename = "match")]
    match_: Match,
    #[serde(default)]
    action: Action,
    outputs: Option<Vec<String>>,
    #[serde(default)]
    non_json: NonJson,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConditionConfig {
    field: String,
    equals: Option<Value>,
    #[serde(rename = "in")]
    in_: Option<Vec<Value>>,
    exists: Option<bool>,
    prefix: Option<String>,
    gt: Option<f64>,
    gte: Option<f64>,
    lt: Option<f64>,
    lte: Option<f64>,
}

#[derive(Deserialize, Default, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum Match {
    #[default]
    All,
    Any,
}

#[derive(Deserialize, Default, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum Action {
    #[default]
    Keep,
    Drop,
}

#[derive(Deserialize, Default, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum NonJson {
    #[default]
    Drop,
    Keep,
}

enum Test {
    Equals(Value),
    In(Vec<Value>),
    Exists(bool),
    Prefix(String),
    Gt(f64),
    Gte(f64),
    Lt(f64),
    Lte(f64),
}

struct Condition {
    path: Path,
    tests: Vec<Test>,
}

impl Condition {
    fn holds(&self, record: &Value) -> bool {
        let value = self.path.get(record).filter(|v| !v.is_null());
        self.tests.iter().all(|test| match (test, value) {
            (Test::Exists(want), v) => v.is_some() == *want,
            (_, None) => false,
            (Test::Equals(want), Some(v)) => v == want,
            (Test::In(set), Some(v)) => set.contains(v),
            (Test::Prefix(p), Some(v)) => v.as_str().is_some_and(|s| s.starts_with(p.as_str())),
            (Test::Gt(n), Some(v)) => v.as_f64().is_some_and(|x| x > *n),
            (Test::Gte(n), Some(v)) => v.as_f64().is_some_and(|x| x >= *n),
            (Test::Lt(n), Some(v)) => v.as_f64().is_some_and(|x| x < *n),
            (Test::Lte(n), Some(v)) => v.as_f64().is_some_and(|x| x <= *n),
        })
    }
}

/// The filter, resolved against the pipeline's outputs.
pub struct Filter {
    conditions: Vec<Condition>,
    match_: Match,
    action: Action,
    non_json: NonJson,
    outputs: Vec<u32>,
}

impl Filter {
    pub fn new(init: &Init) -> Result<Self, String> {
        let config: Config = init.config()?;
        if config.conditions.is_empty() {
            return Err("plugin_config.conditions: give at least one condition".into());
        }
        let conditions = config
            .conditions
            .into_iter()
            .enumerate()
            .map(|(i, c)| {
                let key = format!("plugin_config.conditions[{i}]");
                let path = Path::parse(&c.field, &format!("{key}.field"))?;
                let mut tests = Vec::new();
                tests.extend(c.equals.map(Test::Equals));
                tests.extend(c.in_.map(Test::In));
                tests.extend(c.exists.map(Test::Exists));
                tests.extend(c.prefix.map(Test::Prefix));
                tests.extend(c.gt.map(Test::Gt));
                tests.extend(c.gte.map(Test::Gte));
                tests.extend(c.lt.map(Test::Lt));
                tests.extend(c.lte.map(Test::Lte));
                if tests.is_empty() {
                    return Err(format!(
                        "{key}: give a test: equals, in, exists, prefix, gt, gte, lt or lte"
                    ));
                }
                Ok(Condition { path, tests })
            })
            .collect::<Result<_, String>>()?;
        Ok(Filter {
            conditions,
            match_: config.match_,
            action: config.action,
            non_json: config.non_json,
            outputs: init.outputs_or_all(config.outputs.as_deref(), "outputs")?,
        })
    }

    /// Whether a record with this data passes the filter.
    pub fn passes(&self, data: &[u8]) -> bool {
        let Ok(record) = serde_json::from_slice::<Value>(data) else {
            return self.non_json == NonJson::Keep;
        };
        let matched = match self.match_ {
            Match::All => self.conditions.iter().all(|c| c.holds(&record)),
            Match::Any => self.conditions.iter().any(|c| c.holds(&record)),
        };
        matched == (self.action == Action::Keep)
    }
}

impl Plugin for Filter {
    fn init(init: Init) -> Result<Self, String> {
        Filter::new(&init)
    }

    fn route(&mut self, batch: &Batch, out: &mut Decisions) -> Result<(), String> {
        for record in batch.records() {
            if self.passes(record.data) {
                out.deliver_each(record.index, &self.outputs);
            }
        }
        Ok(())
    }
}

export_plugin!(Filter);

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(config: &str) -> Result<Filter, String> {
        Filter::new(&Init {
            config: config.into(),
            outputs: vec!["a".into(), "b".into()],
        })
    }

    #[test]
    fn every_test_kind_keeps_what_matches() {
        let f = filter(
            r#"{"conditions":[{"field":"type","equals":"order"},{"field":"amount","gte":100,"lt":1000},
                {"field":"region","in":["eu","us"]},{"field":"user.id","exists":true},{"field":"sku","prefix":"A-"}]}"#,
        )
        .unwrap();
        let ok = r#"{"type":"order","amount":100,"region":"eu","user":{"id":7},"sku":"A-1"}"#;
        assert!(f.passes(ok.as_bytes()));
        for bad in [
            r#"{"type":"refund","amount":100,"region":"eu","user":{"id":7},"sku":"A-1"}"#,
            r#"{"type":"order","amount":99.5,"region":"eu","user":{"id":7},"sku":"A-1"}"#,
            r#"{"type":"order","amount":1000,"region":"eu","user":{"id":7},"sku":"A-1"}"#,
            r#"{"type":"order","amount":"100","region":"eu","user":{"id":7},"sku":"A-1"}"#,
            r#"{"type":"order","amount":100,"region":"ap","user":{"id":7},"sku":"A-1"}"#,
            r#"{"type":"order","amount":100,"region":"eu","user":{"id":null},"sku":"A-1"}"#,
            r#"{"type":"order","amount":100,"region":"eu","user":{"id":7},"sku":"B-1"}"#,
            "not json",
        ] {
            assert!(!f.passes(bad.as_bytes()), "{bad}");
        }
    }

    #[test]
    fn any_drop_and_non_json_change_the_outcome() {
        let f = filter(r#"{"conditions":[{"field":"a","equals":1},{"field":"b","exists":false}],"match":"any","action":"drop","non_json":"keep"}"#).unwrap();
        assert!(!f.passes(br#"{"a":1,"b":2}"#));
        assert!(!f.passes(br#"{"a":2}"#));
        assert!(f.passes(br#"{"a":2,"b":2}"#));
        assert!(f.passes(b"plain text"));
    }

    #[test]
    fn configuration_errors_name_the_key() {
        let e = filter(r#"{"conditions":[{"field":"a"}]}"#).err().unwrap();
        assert!(
            e.starts_with("plugin_config.conditions[0]: give a test"),
            "{e}"
        );
        let e = filter(r#"{"conditions":[{"field":"a","equals":1}],"outputs":["c"]}"#)
            .err()
            .unwrap();
        assert!(e.contains("plugin_config.outputs: output \"c\""), "{e}");
        let e = filter(r#"{"conditions":[{"field":"a","eq":1}]}"#)
            .err()
            .unwrap();
        assert!(e.contains("unknown field `eq`"), "{e}");
        let e = filter(r#"{"conditions":[{"field":"a..b","exists":true}]}"#)
            .err()
            .unwrap();
        assert!(e.starts_with("plugin_config.conditions[0].field"), "{e}");
    }
}
