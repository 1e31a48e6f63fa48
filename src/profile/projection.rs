//! Field projection by dotted paths (`fields=person.name,homeAddress`), used by profile access and
//! exports: the result keeps the nesting of the source and only the named subtrees.

use serde_json::{Map, Value};

/// Parses a comma-separated field list, trimming blanks and dropping empty entries.
pub fn parse_fields(list: &str) -> Vec<String> {
    list.split(',')
        .map(str::trim)
        .filter(|field| !field.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Returns the parts of `source` named by `paths`; an empty list keeps everything. A path that does
/// not exist in `source` is left out (not null), and a path through an array stops at the array,
/// keeping it whole.
pub fn project(source: &Value, paths: &[String]) -> Value {
    if paths.is_empty() {
        return source.clone();
    }
    let mut result = Map::new();
    for path in paths {
        copy_path(source, &mut result, &path.split('.').collect::<Vec<_>>());
    }
    Value::Object(result)
}

fn copy_path(source: &Value, target: &mut Map<String, Value>, segments: &[&str]) {
    let Some((first, rest)) = segments.split_first() else {
        return;
    };
    let Some(child) = source.get(*first) else {
        return;
    };
    if rest.is_empty() || !child.is_object() {
        target.insert((*first).to_owned(), child.clone());
        return;
    }
    let entry = target
        .entry((*first).to_owned())
        .or_insert_with(|| Value::Object(Map::new()));
    if let Value::Object(nested) = entry {
        copy_path(child, nested, rest);
        if nested.is_empty() {
            target.remove(*first);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn projection_keeps_nesting_and_skips_missing_paths() {
        let profile = json!({"person": {"name": {"firstName": "Ada", "lastName": "L"}, "gender": "female"},
            "homeAddress": {"countryCode": "US"}, "loyalty": {"points": 5}});
        let fields = parse_fields("person.name.firstName, homeAddress ,nothing.here,,");
        assert_eq!(
            project(&profile, &fields),
            json!({"person": {"name": {"firstName": "Ada"}}, "homeAddress": {"countryCode": "US"}})
        );
        assert_eq!(project(&profile, &[]), profile);
    }
}
