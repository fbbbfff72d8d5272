//! Field paths into JSON records, shared by the shipped plugins: `user.email`
//! names a field of a field; a numeric segment indexes an array
//! (`items.0.sku`); `*` matches every field of an object or element of an
//! array (`items.*.card`). A field whose name contains a dot cannot be named.

use serde_json::Value;

/// A parsed field path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Path(Vec<String>);

impl Path {
    /// Parses `a.b.c`; an empty path or an empty segment is an error naming `key`.
    pub fn parse(text: &str, key: &str) -> Result<Path, String> {
        if text.is_empty() || text.split('.').any(str::is_empty) {
            return Err(format!(
                "{key}: {text:?} is not a field path (like user.email)"
            ));
        }
        Ok(Path(text.split('.').map(str::to_string).collect()))
    }

    /// The value at this path, if every segment exists (`*` takes the first match).
    pub fn get<'v>(&self, value: &'v Value) -> Option<&'v Value> {
        get(value, &self.0)
    }

    /// Calls `f` on every value this path reaches; returns how many.
    pub fn for_each_mut(&self, value: &mut Value, f: &mut dyn FnMut(&mut Value)) -> usize {
        for_each_mut(value, &self.0, f)
    }

    /// Removes every field this path reaches; returns how many.
    pub fn remove(&self, value: &mut Value) -> usize {
        let Some((last, parent)) = self.0.split_last() else {
            return 0;
        };
        let mut removed = 0;
        for_each_mut(value, parent, &mut |v| match v {
            Value::Object(map) if last == "*" => {
                removed += map.len();
                map.clear();
            }
            Value::Object(map) => removed += usize::from(map.remove(last).is_some()),
            Value::Array(items) if last == "*" => {
                removed += items.len();
                items.clear();
            }
            _ => {}
        });
        removed
    }
}

fn get<'v>(value: &'v Value, path: &[String]) -> Option<&'v Value> {
    let Some((first, rest)) = path.split_first() else {
        return Some(value);
    };
    match (value, first.as_str()) {
        (Value::Object(map), "*") => map.values().find_map(|v| get(v, rest)),
        (Value::Array(items), "*") => items.iter().find_map(|v| get(v, rest)),
        (Value::Object(map), name) => map.get(name).and_then(|v| get(v, rest)),
        (Value::Array(items), index) => index
            .parse::<usize>()
            .ok()
            .and_then(|i| items.get(i))
            .and_then(|v| get(v, rest)),
        _ => None,
    }
}

fn for_each_mut(value: &mut Value, path: &[String], f: &mut dyn FnMut(&mut Value)) -> usize {
    let Some((first, rest)) = path.split_first() else {
        f(value);
        return 1;
    };
    match (value, first.as_str()) {
        (Value::Object(map), "*") => map.values_mut().map(|v| for_each_mut(v, rest, f)).sum(),
        (Value::Array(items), "*") => items.iter_mut().map(|v| for_each_mut(v, rest, f)).sum(),
        (Value::Object(map), name) => map.get_mut(name).map_or(0, |v| for_each_mut(v, rest, f)),
        (Value::Array(items), index) => index
            .parse::<usize>()
            .ok()
            .and_then(|i| items.get_mut(i))
            .map_or(0, |v| for_each_mut(v, rest, f)),
        _ => 0,
    }
}

/// A scalar as text: strings as they are, numbers and booleans as JSON text;
/// `None` for null, arrays and objects.
pub fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn path(text: &str) -> Path {
        Path::parse(text, "test").unwrap()
    }

    #[test]
    fn get_follows_fields_indexes_and_wildcards() {
        let v = json!({"user": {"email": "a@b"}, "items": [{"sku": "x"}, {"sku": "y"}]});
        assert_eq!(path("user.email").get(&v), Some(&json!("a@b")));
        assert_eq!(path("items.1.sku").get(&v), Some(&json!("y")));
        assert_eq!(path("items.*.sku").get(&v), Some(&json!("x")));
        assert_eq!(path("user.phone").get(&v), None);
        assert_eq!(path("user.email.x").get(&v), None);
        assert!(Path::parse("a..b", "k").is_err());
        assert!(Path::parse("", "k").is_err());
    }

    #[test]
    fn for_each_mut_and_remove_reach_every_match() {
        let mut v = json!({"items": [{"card": 1, "n": 1}, {"card": 2}, {"n": 3}], "card": 9});
        let n = path("items.*.card").for_each_mut(&mut v, &mut |x| *x = json!("***"));
        assert_eq!(n, 2);
        assert_eq!(v["items"][1]["card"], "***");
        assert_eq!(path("items.*.n").remove(&mut v), 2);
        assert_eq!(
            v,
            json!({"items": [{"card": "***"}, {"card": "***"}, {}], "card": 9})
        );
    }
}
