//! `route_by_field`: sends each JSON record to the output named by one of its fields.
//!
//! `plugin_config = { field = "tenant", routes = { a = "out-a", b = "out-b" }, default = "out-c" }`:
//! a record whose top-level `tenant` is `"a"` goes to `out-a`; any other value,
//! a record without the field, or one that is not a JSON object goes to
//! `default`, or is dropped when there is no default. Numbers and booleans match
//! by their JSON text (`5`, `true`). Only the one field is decoded: the
//! record is scanned up to it (`scan`), and what follows is not read.

use distributary_plugin_sdk::{Batch, Decisions, Init, Plugin, export_plugin};
use serde::Deserialize;
use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;

mod scan;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    field: String,
    #[serde(default)]
    routes: HashMap<String, String>,
    default: Option<String>,
}

/// The routing table resolved against the pipeline's outputs.
pub struct RouteByField {
    field: String,
    routes: HashMap<String, u32>,
    default: Option<u32>,
}

impl RouteByField {
    /// Parses `plugin_config` (JSON) and checks every named output exists.
    pub fn new(config: &str, outputs: &[String]) -> Result<Self, String> {
        let config: Config = distributary_plugin_sdk::parse_config(config)?;
        let index = |name: &str, key: &str| {
            outputs
                .iter()
                .position(|o| o == name)
                .map(|i| i as u32)
                .ok_or_else(|| format!("plugin_config.{key}: output {name:?} is not one of the pipeline's outputs {outputs:?}"))
        };
        let mut routes = HashMap::with_capacity(config.routes.len());
        for (value, output) in &config.routes {
            routes.insert(value.clone(), index(output, &format!("routes.{value}"))?);
        }
        let default = match &config.default {
            Some(name) => Some(index(name, "default")?),
            None => None,
        };
        Ok(RouteByField {
            field: config.field,
            routes,
            default,
        })
    }

    /// The output index for one record's data, or `None` to drop it.
    pub fn decide(&self, data: &[u8]) -> Option<u32> {
        let value = scan::find_field(data, &self.field)
            .and_then(|raw| serde_json::from_slice::<Scalar>(raw).ok())
            .and_then(|scalar| scalar.0);
        match value {
            Some(value) => self.routes.get(value.as_ref()).copied().or(self.default),
            None => self.default,
        }
    }
}

/// A JSON value as route-table text: strings as they are, numbers and booleans as JSON text.
struct Scalar<'de>(Option<Cow<'de, str>>);

impl<'de> Deserialize<'de> for Scalar<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Scalar<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Scalar(Some(Cow::Borrowed(v))))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Scalar(Some(Cow::Owned(v.to_owned()))))
            }
            fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
                Ok(Scalar(Some(Cow::Borrowed(if v {
                    "true"
                } else {
                    "false"
                }))))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
                Ok(Scalar(Some(Cow::Owned(v.to_string()))))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
                Ok(Scalar(Some(Cow::Owned(v.to_string()))))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
                Ok(Scalar(Some(Cow::Owned(v.to_string()))))
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(Scalar(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Scalar(None))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Self::Value, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Scalar(None))
            }
        }
        d.deserialize_any(V)
    }
}

struct Plugged(RouteByField);

impl Plugin for Plugged {
    fn init(init: Init) -> Result<Self, String> {
        RouteByField::new(&init.config, &init.outputs).map(Plugged)
    }

    fn route(&mut self, batch: &Batch, out: &mut Decisions) -> Result<(), String> {
        for record in 0..batch.len() {
            if let Some(output) = self.0.decide(batch.data(record)) {
                out.deliver(record, output);
            }
        }
        Ok(())
    }
}

export_plugin!(Plugged);

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> RouteByField {
        let outputs = ["out-a", "out-b", "out-c"].map(String::from);
        RouteByField::new(
            r#"{"field":"tenant","routes":{"a":"out-a","b":"out-b","7":"out-b"},"default":"out-c"}"#,
            &outputs,
        )
        .unwrap()
    }

    #[test]
    fn routes_by_the_field_value() {
        let t = table();
        assert_eq!(t.decide(br#"{"x":{"tenant":"b"},"tenant":"a"}"#), Some(0));
        assert_eq!(
            t.decide(br#"{"tenant":"b","n":[1,2,{"tenant":"a"}]}"#),
            Some(1)
        );
        assert_eq!(t.decide(br#"{"tenant":7}"#), Some(1));
        assert_eq!(t.decide(br#"{"tenant":"\u0061"}"#), Some(0));
    }

    #[test]
    fn unknown_missing_or_bad_records_go_to_default() {
        let t = table();
        assert_eq!(t.decide(br#"{"tenant":"zzz"}"#), Some(2));
        assert_eq!(t.decide(br#"{"other":"a"}"#), Some(2));
        assert_eq!(t.decide(b"not json"), Some(2));
        assert_eq!(t.decide(br#"["a"]"#), Some(2));
        assert_eq!(t.decide(br#"{"tenant":null}"#), Some(2));
    }

    #[test]
    fn without_default_unmatched_records_are_dropped() {
        let outputs = ["out-a".to_string()];
        let t =
            RouteByField::new(r#"{"field":"tenant","routes":{"a":"out-a"}}"#, &outputs).unwrap();
        assert_eq!(t.decide(br#"{"tenant":"a"}"#), Some(0));
        assert_eq!(t.decide(br#"{"tenant":"b"}"#), None);
        assert_eq!(t.decide(b"{"), None);
    }

    #[test]
    fn init_rejects_outputs_outside_the_pipeline() {
        let outputs = ["out-a".to_string()];
        let err = RouteByField::new(r#"{"field":"t","routes":{"a":"nope"}}"#, &outputs)
            .err()
            .unwrap();
        assert!(err.contains("routes.a") && err.contains("nope"), "{err}");
        let err = RouteByField::new(r#"{"field":"t","default":"nope"}"#, &outputs)
            .err()
            .unwrap();
        assert!(err.contains("default"), "{err}");
        assert!(RouteByField::new(r#"{"routes":{}}"#, &outputs).is_err());
    }
}
