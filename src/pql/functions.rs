//! The function table: every PQL function and method with its call style, arity, argument and
//! result types (pql.md §4). The checker validates calls against it and the compiler uses it to
//! know which arguments are evaluated once per array element.

/// Static types known before evaluation. Field values are `Any`: there is no schema here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ty {
    /// Unknown until evaluation (attributes, `if` with mixed branches, ...).
    Any,
    /// `true`/`false`.
    Bool,
    /// Integer or double.
    Number,
    /// String.
    Str,
    /// Instant or date.
    Time,
    /// Array or list.
    Array,
    /// Map (`groupBy` result, `identityMap`, ...).
    Map,
    /// Object literal.
    Object,
    /// The `null` literal.
    Null,
}

impl Ty {
    /// Name used in error messages.
    pub fn name(self) -> &'static str {
        match self {
            Ty::Any => "any",
            Ty::Bool => "boolean",
            Ty::Number => "number",
            Ty::Str => "string",
            Ty::Time => "date/time",
            Ty::Array => "array",
            Ty::Map => "map",
            Ty::Object => "object",
            Ty::Null => "null",
        }
    }

    /// Whether a value of type `self` is acceptable where `want` is expected.
    pub fn fits(self, want: Ty) -> bool {
        self == want
            || matches!(self, Ty::Any | Ty::Null)
            || want == Ty::Any
            // Date-time attributes arrive as strings; `date(...)` compares with them.
            || matches!((self, want), (Ty::Str, Ty::Time) | (Ty::Time, Ty::Str))
            // Maps and objects are both key/value structures.
            || matches!((self, want), (Ty::Map, Ty::Object) | (Ty::Object, Ty::Map))
    }
}

/// How a function is called.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// `receiver.name(args)`
    Method,
    /// `name(args)`
    Function,
}

/// One table entry.
#[derive(Debug, Clone, Copy)]
pub struct FnSpec {
    /// Name, case-sensitive (pql.md §2.8 recommends case-sensitive function names).
    pub name: &'static str,
    /// Call style.
    pub style: Style,
    /// Expected receiver type for methods.
    pub receiver: Ty,
    /// Argument types; arguments past `min_args` are optional.
    pub args: &'static [Ty],
    /// Number of mandatory arguments.
    pub min_args: usize,
    /// Result type.
    pub ret: Ty,
    /// Index of the argument evaluated per element of the receiver (element = implicit context),
    /// if any.
    pub per_element: Option<usize>,
}

const fn method(
    name: &'static str,
    receiver: Ty,
    args: &'static [Ty],
    min_args: usize,
    ret: Ty,
) -> FnSpec {
    FnSpec {
        name,
        style: Style::Method,
        receiver,
        args,
        min_args,
        ret,
        per_element: None,
    }
}

const fn per_elem(name: &'static str, args: &'static [Ty], min_args: usize, ret: Ty) -> FnSpec {
    FnSpec {
        name,
        style: Style::Method,
        receiver: Ty::Array,
        args,
        min_args,
        ret,
        per_element: Some(0),
    }
}

const fn function(name: &'static str, args: &'static [Ty], ret: Ty) -> FnSpec {
    FnSpec {
        name,
        style: Style::Function,
        receiver: Ty::Any,
        args,
        min_args: args.len(),
        ret,
        per_element: None,
    }
}

use Ty::*;

/// Every function and method.
pub const FUNCTIONS: &[FnSpec] = &[
    // §4.4 strings
    method("startsWith", Str, &[Str, Bool], 1, Bool),
    method("doesNotStartWith", Str, &[Str, Bool], 1, Bool),
    method("endsWith", Str, &[Str, Bool], 1, Bool),
    method("doesNotEndWith", Str, &[Str, Bool], 1, Bool),
    method("contains", Str, &[Str, Bool], 1, Bool),
    method("doesNotContain", Str, &[Str, Bool], 1, Bool),
    method("equals", Str, &[Str, Bool], 1, Bool),
    method("notEqualTo", Str, &[Str, Bool], 1, Bool),
    method("matches", Str, &[Str], 1, Bool),
    method("regexGroup", Str, &[Str, Number], 1, Str),
    // §4.5 arrays
    method("intersects", Array, &[Array], 1, Bool),
    method("intersection", Array, &[Array], 1, Array),
    method("subsetOf", Array, &[Array], 1, Bool),
    method("supersetOf", Array, &[Array], 1, Bool),
    method("includes", Array, &[Any], 1, Bool),
    method("distinct", Array, &[], 0, Array),
    per_elem("groupBy", &[Any], 1, Map),
    per_elem("filter", &[Bool], 1, Array),
    per_elem("map", &[Any], 1, Array),
    per_elem("topN", &[Any, Number], 2, Array),
    per_elem("bottomN", &[Any, Number], 2, Array),
    method("head", Array, &[], 0, Any),
    per_elem("exists", &[Bool], 1, Bool),
    per_elem("forall", &[Bool], 1, Bool),
    // §4.8 aggregation
    method("count", Array, &[], 0, Number),
    per_elem("sum", &[Number], 0, Number),
    per_elem("average", &[Number], 0, Number),
    per_elem("min", &[Any], 0, Any),
    per_elem("max", &[Any], 0, Any),
    // §4.6 maps
    method("get", Map, &[Str], 1, Any),
    method("keys", Map, &[], 0, Array),
    method("values", Map, &[], 0, Array),
    // §4.7 objects
    method("isNull", Any, &[], 0, Bool),
    method("isNotNull", Any, &[], 0, Bool),
    // §4.9 dates
    method("getMonth", Time, &[], 0, Number),
    method("getYear", Time, &[], 0, Number),
    method("getDayOfMonth", Time, &[], 0, Number),
    function("currentMonth", &[], Number),
    function("currentYear", &[], Number),
    function("currentDayOfMonth", &[], Number),
    function("date", &[Number, Number, Number], Time),
    // §4.1, §2.7, computed attributes
    function("if", &[Bool, Any, Any], Any),
    function("inSegment", &[Str], Bool),
    function("mapEntry", &[Any, Any], Map),
];

/// Looks a function up by exact name.
pub fn lookup(name: &str) -> Option<&'static FnSpec> {
    FUNCTIONS.iter().find(|f| f.name == name)
}

/// Case-insensitive lookup, used to suggest the right spelling of `StartsWith`.
pub fn lookup_ignore_case(name: &str) -> Option<&'static FnSpec> {
    FUNCTIONS.iter().find(|f| f.name.eq_ignore_ascii_case(name))
}
