//! Splitting a compiled predicate for column-at-a-time evaluation.
//!
//! [`CompiledQuery::plan`] exposes a predicate's `and` / `or` / `not` structure over leaves, and
//! singles out the leaves whose value depends on one profile attribute only (`country = "US"`,
//! `name.startsWith("jo", false)`, `tier in ["gold", "platinum"]`). A columnar store evaluates
//! such a leaf once per distinct value of the attribute's dictionary and then reads the answer by
//! code for every row, instead of walking the expression tree per row.
//!
//! # Exactness
//!
//! A leaf is evaluated by the same evaluator as the whole predicate, on a view that answers only
//! its attribute, so its truth for a value is the truth it has in any row holding that value. The
//! row evaluator makes a predicate false when any part of it raised an evaluation error; a leaf
//! that raises one reports [`Outcome::Error`], and the caller then evaluates the whole predicate
//! on that row (the reference). Evaluating both sides of an `and` / `or` where the row evaluator
//! would short-circuit can therefore only cost time, never change an answer.

use super::CompiledQuery;
use super::compile::{LikeArg, Node, RegexArg};
use super::eval::Cx;
use super::view::{FieldPath, ProfileView, Val};

/// The boolean structure of a predicate over its leaves.
#[derive(Debug)]
pub enum Plan<'q> {
    /// Both hold.
    And(Box<Plan<'q>>, Box<Plan<'q>>),
    /// Either holds.
    Or(Box<Plan<'q>>, Box<Plan<'q>>),
    /// The (two-valued) negation.
    Not(Box<Plan<'q>>),
    /// A leaf whose value depends only on the profile attribute at the path (and on `now`).
    Attribute(Leaf<'q>, &'q FieldPath),
    /// A `chain` over the profile's events whose steps each test one event field (no `WHEN`,
    /// no `WHERE`): a columnar store can tabulate the steps per code of that field.
    Chain(ChainLeaf<'q>),
    /// Any other leaf: evaluated per row.
    Row(Leaf<'q>),
}

/// A `chain` whose steps each read one event field; see [`Plan::Chain`].
#[derive(Debug)]
pub struct ChainLeaf<'q> {
    node: &'q Node,
    timestamp: &'q FieldPath,
    counts: Vec<u32>,
    /// Each step's condition and the event field it reads.
    steps: Vec<(&'q Node, &'q FieldPath)>,
}

impl<'q> ChainLeaf<'q> {
    /// The whole chain as a leaf (for rows the tables cannot answer).
    pub fn leaf(&self) -> Leaf<'q> {
        Leaf(self.node)
    }

    /// The events' timestamp field.
    pub fn timestamp(&self) -> &'q FieldPath {
        self.timestamp
    }

    /// The event field each step reads, in step order.
    pub fn step_fields(&self) -> impl Iterator<Item = &'q FieldPath> + '_ {
        self.steps.iter().map(|(_, field)| *field)
    }

    /// Evaluates step `step`'s condition for an event whose field is `value`.
    pub fn test_step_value(&self, step: usize, value: Val<'_>, now_ms: i64) -> Outcome {
        let (what, field) = self.steps[step];
        let view = SingleField {
            id: field.id(),
            value,
            on_event: true,
        };
        let cx = Cx::new(&view, now_ms);
        let hit = super::eval::test_on_element(what, &cx, Val::Event(0));
        match cx.error.take() {
            Some(_) => Outcome::Error,
            None => hit.into(),
        }
    }

    /// The chain's answer for events with timestamps `stamps`, where `ok(step, event)` says whether
    /// an event satisfies a step: the evaluator's own search ([`super::eval::chain_search`]).
    pub fn search(&self, stamps: &[Option<i64>], mut ok: impl FnMut(usize, usize) -> bool) -> bool {
        super::eval::chain_search(&self.counts, stamps, |step, event, _| ok(step, event))
    }
}

/// A sub-predicate evaluated on its own.
#[derive(Debug, Clone, Copy)]
pub struct Leaf<'q>(&'q Node);

/// The result of evaluating a leaf.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// False.
    False,
    /// True.
    True,
    /// Evaluation raised an error: evaluate the whole predicate on the row instead.
    Error,
}

impl Outcome {
    /// `a and b` of the row evaluator, where either side's error means "decide per row".
    pub fn and(self, other: Outcome) -> Outcome {
        match (self, other) {
            (Outcome::Error, _) | (_, Outcome::Error) => Outcome::Error,
            (Outcome::True, Outcome::True) => Outcome::True,
            _ => Outcome::False,
        }
    }

    /// `a or b`, with the same rule for errors.
    pub fn or(self, other: Outcome) -> Outcome {
        match (self, other) {
            (Outcome::Error, _) | (_, Outcome::Error) => Outcome::Error,
            (Outcome::False, Outcome::False) => Outcome::False,
            _ => Outcome::True,
        }
    }
}

impl From<bool> for Outcome {
    fn from(hit: bool) -> Outcome {
        match hit {
            true => Outcome::True,
            false => Outcome::False,
        }
    }
}

impl std::ops::Not for Outcome {
    type Output = Outcome;

    /// Two-valued negation; an error stays an error.
    fn not(self) -> Outcome {
        match self {
            Outcome::True => Outcome::False,
            Outcome::False => Outcome::True,
            Outcome::Error => Outcome::Error,
        }
    }
}

impl Leaf<'_> {
    /// Evaluates the leaf on `view` at `now_ms`.
    pub fn test(&self, view: &dyn ProfileView, now_ms: i64) -> Outcome {
        let cx = Cx::new(view, now_ms);
        let hit = self.0.test(&cx, None);
        match cx.error.take() {
            Some(_) => Outcome::Error,
            None => hit.into(),
        }
    }

    /// Evaluates the leaf for a profile whose attribute at `path` is `value` (nothing else is
    /// read by an [`Plan::Attribute`] leaf).
    pub fn test_value(&self, path: &FieldPath, value: Val<'_>, now_ms: i64) -> Outcome {
        self.test(
            &SingleField {
                id: path.id(),
                value,
                on_event: false,
            },
            now_ms,
        )
    }
}

/// A profile holding one value: an attribute, or a field of its only event (`on_event`).
struct SingleField<'v> {
    id: u32,
    value: Val<'v>,
    on_event: bool,
}

impl SingleField<'_> {
    fn get(&self, path: &FieldPath, on_event: bool) -> Val<'_> {
        match on_event == self.on_event && path.id() == self.id {
            true => self.value.clone(),
            false => Val::Null,
        }
    }
}

impl ProfileView for SingleField<'_> {
    fn attribute(&self, path: &FieldPath) -> Val<'_> {
        self.get(path, false)
    }

    fn event_count(&self) -> usize {
        usize::from(self.on_event)
    }

    fn event_attribute(&self, index: usize, path: &FieldPath) -> Val<'_> {
        match index {
            0 => self.get(path, true),
            _ => Val::Null,
        }
    }

    fn profile_value(&self) -> Val<'_> {
        Val::Null
    }

    fn event_value(&self, _index: usize) -> Val<'_> {
        Val::Null
    }

    fn in_segment(&self, _segment_id: &str) -> bool {
        false
    }
}

/// What a node reads from the profile.
enum Reads<'q> {
    /// Constants and the clock only.
    Nothing,
    /// Exactly this attribute.
    One(&'q FieldPath),
    /// Anything else (events, element frames, several attributes, the whole profile, ...).
    More,
}

impl<'q> Reads<'q> {
    fn with(self, other: Reads<'q>) -> Reads<'q> {
        match (self, other) {
            (Reads::More, _) | (_, Reads::More) => Reads::More,
            (Reads::Nothing, reads) | (reads, Reads::Nothing) => reads,
            (Reads::One(a), Reads::One(b)) if a.id() == b.id() => Reads::One(a),
            _ => Reads::More,
        }
    }
}

/// What `node` reads, for the node kinds a single-field leaf may contain: profile attributes, or
/// with `element` the fields of the current element (a chain step's event).
fn reads_from(node: &Node, element: bool) -> Reads<'_> {
    let reads = |node| reads_from(node, element);
    match node {
        Node::Const(_) | Node::TimeWord(_) | Node::Clock(_) => Reads::Nothing,
        Node::Path(base, path)
            if matches!(
                (element, &**base),
                (false, Node::Root) | (true, Node::Frame(0))
            ) =>
        {
            Reads::One(path)
        }
        Node::Not(a) | Node::Neg(a) => reads(a),
        Node::And(a, b)
        | Node::Or(a, b)
        | Node::Cmp(_, a, b)
        | Node::Arith(_, a, b)
        | Node::In(a, b, _) => reads(a).with(reads(b)),
        Node::StrTest {
            recv, arg, case, ..
        } => {
            let both = reads(recv).with(reads(arg));
            match case {
                Some(case) => both.with(reads(case)),
                None => both,
            }
        }
        Node::Like(a, LikeArg::Fixed(_)) | Node::Matches(a, RegexArg::Fixed(_)) => reads(a),
        Node::Like(a, LikeArg::Dynamic(b)) | Node::Matches(a, RegexArg::Dynamic(b)) => {
            reads(a).with(reads(b))
        }
        Node::Array(items) => items
            .iter()
            .fold(Reads::Nothing, |acc, item| acc.with(reads(item))),
        _ => Reads::More,
    }
}

/// The chain leaf of `node`, when it is a chain over `xEvent` whose steps each read one field.
fn chain_leaf(node: &Node) -> Option<ChainLeaf<'_>> {
    let Node::Chain(events, timestamp, steps) = node else {
        return None;
    };
    if !matches!(**events, Node::Events) {
        return None;
    }
    let fields = steps
        .iter()
        .map(
            |step| match (&step.when, &step.where_, reads_from(&step.what, true)) {
                (None, None, Reads::One(field)) => Some((&step.what, field)),
                _ => None,
            },
        )
        .collect::<Option<Vec<_>>>()?;
    Some(ChainLeaf {
        node,
        timestamp,
        counts: steps.iter().map(|step| step.count).collect(),
        steps: fields,
    })
}

fn plan_of(node: &Node) -> Plan<'_> {
    match node {
        Node::And(a, b) => Plan::And(Box::new(plan_of(a)), Box::new(plan_of(b))),
        Node::Or(a, b) => Plan::Or(Box::new(plan_of(a)), Box::new(plan_of(b))),
        Node::Not(a) => Plan::Not(Box::new(plan_of(a))),
        other => match (reads_from(other, false), chain_leaf(other)) {
            (Reads::One(path), _) => Plan::Attribute(Leaf(other), path),
            (_, Some(chain)) => Plan::Chain(chain),
            _ => Plan::Row(Leaf(other)),
        },
    }
}

impl CompiledQuery {
    /// The predicate's plan (see the module docs).
    pub fn plan(&self) -> Plan<'_> {
        plan_of(&self.root)
    }
}

impl Plan<'_> {
    /// Evaluates the plan on one row, leaf by leaf: the reference for a columnar executor, which
    /// must give the same answer as [`CompiledQuery::matches_at`] (an error in any leaf means the
    /// caller evaluates the whole predicate).
    pub fn test(&self, view: &dyn ProfileView, now_ms: i64) -> Outcome {
        match self {
            Plan::And(a, b) => a.test(view, now_ms).and(b.test(view, now_ms)),
            Plan::Or(a, b) => a.test(view, now_ms).or(b.test(view, now_ms)),
            Plan::Not(a) => !a.test(view, now_ms),
            Plan::Attribute(leaf, _) | Plan::Row(leaf) => leaf.test(view, now_ms),
            Plan::Chain(chain) => chain.leaf().test(view, now_ms),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pql::{JsonProfile, test_vectors};

    /// Leaf-by-leaf evaluation, falling back to the whole predicate on errors, agrees with the row
    /// evaluator on every boolean PQL vector; single-attribute leaves also agree when evaluated
    /// on their attribute alone.
    #[test]
    fn plans_agree_with_the_row_evaluator_on_every_vector() {
        let vectors = test_vectors::vectors();
        let now_ms = test_vectors::now(&vectors).timestamp_millis();
        let (mut attribute_leaves, mut chain_leaves) = (0, 0);
        for (source, fixture, query) in test_vectors::compiled(&vectors) {
            let fixture = &vectors["fixtures"][fixture];
            let view = JsonProfile::new(&fixture["profile"], fixture["events"].as_array().unwrap());
            let plan = query.plan();
            let by_plan = match plan.test(&view, now_ms) {
                Outcome::True => true,
                Outcome::False => false,
                Outcome::Error => query.matches_at(&view, now_ms),
            };
            assert_eq!(by_plan, query.matches_at(&view, now_ms), "{source}");
            let mut leaves = vec![&plan];
            while let Some(plan) = leaves.pop() {
                match plan {
                    Plan::And(a, b) | Plan::Or(a, b) => leaves.extend([&**a, &**b]),
                    Plan::Not(a) => leaves.push(a),
                    Plan::Attribute(leaf, path) => {
                        attribute_leaves += 1;
                        let alone = leaf.test_value(path, view.attribute(path), now_ms);
                        assert_eq!(alone, leaf.test(&view, now_ms), "{source}");
                    }
                    Plan::Chain(chain) => {
                        chain_leaves += 1;
                        // The search fed with per-event step tests answers like the evaluator.
                        let fields: Vec<_> = chain.step_fields().collect();
                        let stamps: Vec<Option<i64>> = (0..view.event_count())
                            .map(|index| {
                                view.event_attribute(index, chain.timestamp()).as_instant()
                            })
                            .collect();
                        let mut error = false;
                        let hit = chain.search(&stamps, |step, index| {
                            let value = view.event_attribute(index, fields[step]);
                            match chain.test_step_value(step, value, now_ms) {
                                Outcome::True => true,
                                Outcome::False => false,
                                Outcome::Error => {
                                    error = true;
                                    false
                                }
                            }
                        });
                        if !error {
                            let whole = chain.leaf().test(&view, now_ms);
                            assert_eq!(Outcome::from(hit), whole, "{source}");
                        }
                    }
                    Plan::Row(_) => {}
                }
            }
        }
        assert!(
            attribute_leaves > 20,
            "only {attribute_leaves} attribute leaves"
        );
        assert!(chain_leaves >= 1, "no chain leaves");
    }
}
