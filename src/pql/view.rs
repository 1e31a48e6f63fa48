//! Storage-independent access to one profile: the [`ProfileView`] trait, the interned
//! [`FieldPath`]s a compiled query asks for, the runtime value type [`Val`], and the
//! [`JsonProfile`] implementation over `serde_json::Value`.
//!
//! A compiled query lists every path it reads ([`crate::pql::CompiledQuery::field_paths`]), each
//! with a dense `id`. A columnar store binds those ids to its columns once per query and then
//! answers [`ProfileView::attribute`] with an array index instead of a string walk, which is what
//! makes the ~10M profiles/s/core attribute comparisons possible.

use std::rc::Rc;

use super::time;

/// A dotted field path (`person.name.firstName`), interned per compiled query.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FieldPath {
    id: u32,
    segments: Box<[Box<str>]>,
}

impl FieldPath {
    /// Builds a path; `id` is its dense index in the owning query's path table.
    pub fn new(id: u32, segments: Vec<String>) -> Self {
        FieldPath {
            id,
            segments: segments.into_iter().map(String::into_boxed_str).collect(),
        }
    }

    /// Dense id, unique per distinct path within one compiled query (0, 1, 2, ...).
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The segments, outermost first.
    pub fn segments(&self) -> &[Box<str>] {
        &self.segments
    }

    /// The path joined with dots.
    pub fn dotted(&self) -> String {
        self.segments.join(".")
    }
}

/// A runtime value. It borrows from the profile store and from the compiled query (`'a`), so
/// reading attributes and comparing them with constants does not allocate.
#[derive(Debug, Clone)]
pub enum Val<'a> {
    /// Missing attribute, explicit JSON `null`, or an undefined result (division by zero, `min`
    /// of an empty array).
    Null,
    /// Boolean.
    Bool(bool),
    /// Integer.
    Int(i64),
    /// Double.
    Double(f64),
    /// Borrowed string.
    Str(&'a str),
    /// Computed string.
    OwnedStr(Rc<str>),
    /// Instant, epoch milliseconds (UTC).
    Time(i64),
    /// An object or array held as JSON by the store.
    Json(&'a serde_json::Value),
    /// A computed list.
    List(Rc<Vec<Val<'a>>>),
    /// A computed map (`groupBy`, `mapEntry`), in insertion order.
    Map(Rc<Vec<(Val<'a>, Val<'a>)>>),
    /// The whole profile (parameter 1), resolved lazily through the view.
    Profile,
    /// The profile's event array (`xEvent`), resolved lazily through the view.
    Events,
    /// One event of the profile, by index.
    Event(usize),
}

impl<'a> Val<'a> {
    /// Converts a JSON leaf to the matching scalar; objects and arrays stay [`Val::Json`].
    pub fn from_json(v: &'a serde_json::Value) -> Val<'a> {
        match v {
            serde_json::Value::Null => Val::Null,
            serde_json::Value::Bool(b) => Val::Bool(*b),
            serde_json::Value::Number(n) => match n.as_i64() {
                Some(i) => Val::Int(i),
                None => Val::Double(n.as_f64().unwrap_or(f64::NAN)),
            },
            serde_json::Value::String(s) => Val::Str(s),
            _ => Val::Json(v),
        }
    }

    /// Whether the value is null.
    pub fn is_null(&self) -> bool {
        matches!(self, Val::Null)
    }

    /// The string, if the value is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Val::Str(s) => Some(s),
            Val::OwnedStr(s) => Some(s),
            _ => None,
        }
    }

    /// The value as an instant: a [`Val::Time`], or a string in RFC 3339 / `YYYY-MM-DD` form.
    pub fn as_instant(&self) -> Option<i64> {
        match self {
            Val::Time(t) => Some(*t),
            Val::Str(s) => time::parse_instant(s),
            Val::OwnedStr(s) => time::parse_instant(s),
            _ => None,
        }
    }
}

/// Read access to one merged profile, its ExperienceEvents and its segment memberships.
///
/// Paths are given as [`FieldPath`]s interned at compile time; an implementation may resolve
/// them by `id` through a table built once per query (see the module docs). Values returned for
/// leaves should be scalars; structured values may be returned as [`Val::Json`] (stores that
/// cannot do that return [`Val::Null`], which makes whole-object access evaluate as missing).
pub trait ProfileView {
    /// The attribute at `path` on the profile, [`Val::Null`] when absent. A path that crosses an
    /// array projects through it (pql.md §2.3): the result is the list of values found.
    fn attribute(&self, path: &FieldPath) -> Val<'_>;

    /// Number of events linked to the profile.
    fn event_count(&self) -> usize;

    /// The attribute at `path` on event `index` (`0..event_count()`), with the same rules.
    fn event_attribute(&self, index: usize, path: &FieldPath) -> Val<'_>;

    /// The whole profile as a value, used when a query returns it or passes it to a function.
    fn profile_value(&self) -> Val<'_>;

    /// Event `index` as a whole value.
    fn event_value(&self, index: usize) -> Val<'_>;

    /// Whether the profile is currently a member of `segment_id` (for `inSegment`).
    fn in_segment(&self, segment_id: &str) -> bool;
}

/// Walks `segments` from `root`, projecting through arrays and flattening one level (pql.md
/// §2.3 \[I\]): `orders.storeId` over `[{storeId: "s1"}, {storeId: "s2"}]` is `["s1", "s2"]`;
/// missing values are dropped from projections.
pub fn walk_json<'a, S: AsRef<str>>(root: &'a serde_json::Value, segments: &[S]) -> Val<'a> {
    let mut cur = root;
    for (i, seg) in segments.iter().enumerate() {
        match cur {
            serde_json::Value::Object(map) => match get_field(map, seg.as_ref()) {
                Some(v) => cur = v,
                None => return Val::Null,
            },
            serde_json::Value::Array(items) => {
                let mut out = Vec::new();
                for item in items {
                    push_flat(&mut out, walk_json(item, &segments[i..]));
                }
                return Val::List(Rc::new(out));
            }
            _ => return Val::Null,
        }
    }
    Val::from_json(cur)
}

/// Map lookup that scans small objects instead of hashing: XDM objects usually have a handful
/// of fields, and comparing a few short keys is cheaper than SipHash-ing the key.
fn get_field<'a>(
    map: &'a serde_json::Map<String, serde_json::Value>,
    key: &str,
) -> Option<&'a serde_json::Value> {
    if map.len() <= 8 {
        map.iter().find(|(k, _)| k.as_str() == key).map(|(_, v)| v)
    } else {
        map.get(key)
    }
}

/// Appends `v` to a projection, flattening one level of arrays and dropping nulls.
pub fn push_flat<'a>(out: &mut Vec<Val<'a>>, v: Val<'a>) {
    match v {
        Val::Null => {}
        Val::List(items) => out.extend(items.iter().filter(|v| !v.is_null()).cloned()),
        Val::Json(serde_json::Value::Array(items)) => {
            out.extend(items.iter().map(Val::from_json).filter(|v| !v.is_null()));
        }
        other => out.push(other),
    }
}

/// A [`ProfileView`] over a JSON profile object and a slice of JSON event objects.
///
/// Segment membership is read from `segmentMembership.<namespace>.<segmentId>.status` in any
/// namespace (`ups` for Platform segments); `realized` and `existing` mean member, anything else
/// (`exited`, missing) means not a member (pql.md §2.7 \[I\]).
#[derive(Debug, Clone, Copy)]
pub struct JsonProfile<'a> {
    profile: &'a serde_json::Value,
    events: &'a [serde_json::Value],
}

impl<'a> JsonProfile<'a> {
    /// Wraps a profile and its events.
    pub fn new(profile: &'a serde_json::Value, events: &'a [serde_json::Value]) -> Self {
        JsonProfile { profile, events }
    }
}

impl ProfileView for JsonProfile<'_> {
    fn attribute(&self, path: &FieldPath) -> Val<'_> {
        walk_json(self.profile, path.segments())
    }

    fn event_count(&self) -> usize {
        self.events.len()
    }

    fn event_attribute(&self, index: usize, path: &FieldPath) -> Val<'_> {
        self.events
            .get(index)
            .map_or(Val::Null, |e| walk_json(e, path.segments()))
    }

    fn profile_value(&self) -> Val<'_> {
        Val::from_json(self.profile)
    }

    fn event_value(&self, index: usize) -> Val<'_> {
        self.events.get(index).map_or(Val::Null, Val::from_json)
    }

    fn in_segment(&self, segment_id: &str) -> bool {
        let Some(serde_json::Value::Object(namespaces)) = self.profile.get("segmentMembership")
        else {
            return false;
        };
        namespaces.values().any(|ns| {
            ns.get(segment_id)
                .and_then(|m| m.get("status"))
                .and_then(|s| s.as_str())
                .is_some_and(|s| s == "realized" || s == "existing")
        })
    }
}
