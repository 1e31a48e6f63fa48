//! Column-at-a-time evaluation of a predicate over [`ProfileTables`].
//!
//! A query is prepared once per preview: its paths are bound to columns and its [`Plan`] becomes
//! a tree of steps. A single-attribute leaf over a dictionary (or boolean) column is evaluated
//! once per distinct value, by the ordinary evaluator, into a truth table indexed by code; a chunk
//! of rows is then answered by reading codes. Other leaves run per row on the row view, and only
//! on the rows where the `and` / `or` around them is still undecided. Rows where a leaf raised an
//! evaluation error are evaluated whole by [`CompiledQuery::matches_at`], so the answers are the
//! row evaluator's (see [`crate::pql::plan`]).

use crate::pql::ProfileView;
use crate::pql::plan::{ChainLeaf, Leaf, Outcome, Plan};
use crate::pql::{CompiledQuery, Val};

use super::{Binding, BoundQuery, ProfileTables, Values};

/// Dictionaries larger than this are not tabulated (the table would cost more than it saves in
/// the first chunks of a preview).
const MAX_TABULATED: usize = 1 << 16;

/// Ranges at least this long are split over the cores; smaller ones are not worth a thread.
const PARALLEL_CHUNK: usize = 2_048;

/// Lowers the calling thread's CPU priority (Linux nice 10): when previews keep every core busy,
/// the HTTP runtime's threads (estimate polls, other requests) are scheduled first, and the
/// evaluation takes the rest. A no-op elsewhere.
fn yield_to_requests() {
    #[cfg(target_os = "linux")]
    // SAFETY: setpriority takes plain integers and touches no memory of ours. On Linux the nice
    // value is per thread and `PRIO_PROCESS` with id 0 names the calling thread, which is a fresh
    // scoped thread that exits after this evaluation.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, 0, 10);
    }
}

/// A query prepared for column-at-a-time evaluation over one [`ProfileTables`].
pub struct PreparedQuery<'q> {
    query: &'q CompiledQuery,
    bound: BoundQuery,
    root: Step<'q>,
    now_ms: i64,
}

enum Step<'q> {
    And(Box<Step<'q>>, Box<Step<'q>>),
    Or(Box<Step<'q>>, Box<Step<'q>>),
    Not(Box<Step<'q>>),
    /// A single-attribute leaf tabulated over its attribute column.
    Tabulated(Tabulated),
    /// A chain whose steps are tabulated per code of the event field they read.
    Chain {
        chain: ChainLeaf<'q>,
        steps: Vec<Tabulated>,
    },
    /// Evaluated per row.
    Row(Leaf<'q>),
}

/// A single-field condition's outcome per code of a column (or for every row, when no row has
/// the field).
enum Tabulated {
    Constant(Outcome),
    Codes {
        column: usize,
        by_code: Vec<Outcome>,
        absent: Outcome,
    },
}

impl Tabulated {
    /// Tabulates `test` over the column `binding` names in `table`; `None` when the column is not
    /// a dictionary or boolean column.
    fn of(
        table: &super::Table,
        binding: Binding,
        test: impl Fn(Val<'_>) -> Outcome,
    ) -> Option<Tabulated> {
        match binding {
            Binding::Absent => Some(Tabulated::Constant(test(Val::Null))),
            Binding::Scalar(column) => {
                let by_code = match &table.columns[column].values {
                    Values::Dictionary { dictionary, .. } if dictionary.len() <= MAX_TABULATED => {
                        (0..dictionary.len())
                            .map(|code| test(Val::Str(dictionary.get(code))))
                            .collect()
                    }
                    Values::Bool(_) => vec![test(Val::Bool(false)), test(Val::Bool(true))],
                    _ => return None,
                };
                Some(Tabulated::Codes {
                    column,
                    by_code,
                    absent: test(Val::Null),
                })
            }
            Binding::Json { .. } | Binding::Materialize => None,
        }
    }

    /// The outcome for row `row` of `table`.
    fn get(&self, table: &super::Table, row: usize) -> Outcome {
        match self {
            Tabulated::Constant(outcome) => *outcome,
            Tabulated::Codes {
                column,
                by_code,
                absent,
            } => {
                let column = &table.columns[*column];
                match column.presence.slot(row) {
                    None => *absent,
                    Some(slot) => match &column.values {
                        Values::Dictionary { codes, .. } => by_code[codes.get(slot)],
                        Values::Bool(values) => by_code[usize::from(values[slot])],
                        // `of` tabulates only the two kinds above.
                        _ => Outcome::Error,
                    },
                }
            }
        }
    }
}

impl ProfileTables {
    /// Prepares `query` for [`ProfileTables::matching`] at the instant `now_ms`.
    pub fn prepare<'q>(&self, query: &'q CompiledQuery, now_ms: i64) -> PreparedQuery<'q> {
        let bound = self.bind(query);
        let root = self.step(query.plan(), &bound, now_ms);
        PreparedQuery {
            query,
            bound,
            root,
            now_ms,
        }
    }

    fn step<'q>(&self, plan: Plan<'q>, bound: &BoundQuery, now_ms: i64) -> Step<'q> {
        let step = |plan: Box<Plan<'q>>| Box::new(self.step(*plan, bound, now_ms));
        match plan {
            Plan::And(a, b) => Step::And(step(a), step(b)),
            Plan::Or(a, b) => Step::Or(step(a), step(b)),
            Plan::Not(a) => Step::Not(step(a)),
            Plan::Row(leaf) => Step::Row(leaf),
            Plan::Attribute(leaf, path) => Tabulated::of(
                &self.attributes,
                bound.attributes[path.id() as usize],
                |value| leaf.test_value(path, value, now_ms),
            )
            .map_or(Step::Row(leaf), Step::Tabulated),
            Plan::Chain(chain) => {
                let steps: Option<Vec<Tabulated>> = chain
                    .step_fields()
                    .enumerate()
                    .map(|(step, field)| {
                        Tabulated::of(&self.events, bound.events[field.id() as usize], |value| {
                            chain.test_step_value(step, value, now_ms)
                        })
                    })
                    .collect();
                match steps {
                    Some(steps) => Step::Chain { chain, steps },
                    None => Step::Row(chain.leaf()),
                }
            }
        }
    }

    /// The rows of `rows` that match the prepared query, in order.
    pub fn matching(&self, prepared: &PreparedQuery<'_>, rows: std::ops::Range<usize>) -> Vec<u32> {
        let rows: Vec<u32> = rows.map(|row| row as u32).collect();
        let outcomes = self.run(prepared, &prepared.root, &rows);
        rows.into_iter()
            .zip(outcomes)
            .filter(|(row, outcome)| match outcome {
                Outcome::True => true,
                Outcome::False => false,
                Outcome::Error => prepared
                    .query
                    .matches_at(&self.row(&prepared.bound, *row as usize), prepared.now_ms),
            })
            .map(|(row, _)| row)
            .collect()
    }

    /// [`ProfileTables::matching`] with a large range split over every core (each thread takes a
    /// contiguous slice, so concatenating keeps the order). The threads run at a lower priority
    /// (see `yield_to_requests`).
    pub fn matching_on_every_core(
        &self,
        prepared: &PreparedQuery<'_>,
        rows: std::ops::Range<usize>,
    ) -> Vec<u32> {
        let threads = std::thread::available_parallelism().map_or(1, |cores| cores.get());
        if threads < 2 || rows.len() < PARALLEL_CHUNK {
            return self.matching(prepared, rows);
        }
        let step = rows.len().div_ceil(threads);
        std::thread::scope(|scope| {
            let parts: Vec<_> = (rows.start..rows.end)
                .step_by(step)
                .map(|start| {
                    let slice = start..(start + step).min(rows.end);
                    scope.spawn(move || {
                        yield_to_requests();
                        self.matching(prepared, slice)
                    })
                })
                .collect();
            // A panicking evaluation re-panics here (a preview job catches it and fails).
            parts
                .into_iter()
                .flat_map(|part| {
                    part.join()
                        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
                })
                .collect()
        })
    }

    fn run(&self, prepared: &PreparedQuery<'_>, step: &Step<'_>, rows: &[u32]) -> Vec<Outcome> {
        match step {
            Step::And(a, b) => self.combine(prepared, a, b, rows, Outcome::False, Outcome::and),
            Step::Or(a, b) => self.combine(prepared, a, b, rows, Outcome::True, Outcome::or),
            Step::Not(a) => self
                .run(prepared, a, rows)
                .into_iter()
                .map(|outcome| !outcome)
                .collect(),
            Step::Tabulated(tabulated) => rows
                .iter()
                .map(|row| tabulated.get(&self.attributes, *row as usize))
                .collect(),
            Step::Chain { chain, steps } => {
                // One timestamp buffer for the whole chunk.
                let mut stamps = Vec::new();
                rows.iter()
                    .map(|row| {
                        self.chain_outcome(prepared, chain, steps, *row as usize, &mut stamps)
                    })
                    .collect()
            }
            Step::Row(leaf) => rows
                .iter()
                .map(|row| leaf.test(&self.row(&prepared.bound, *row as usize), prepared.now_ms))
                .collect(),
        }
    }

    /// A tabulated chain on one row: the evaluator's search over the row's event timestamps, with
    /// step tests read from the tables; an error in any test read means "evaluate the row whole".
    fn chain_outcome(
        &self,
        prepared: &PreparedQuery<'_>,
        chain: &ChainLeaf<'_>,
        steps: &[Tabulated],
        row: usize,
        stamps: &mut Vec<Option<i64>>,
    ) -> Outcome {
        let view = self.row(&prepared.bound, row);
        let events = self.event_range(row);
        stamps.clear();
        stamps.extend(
            (0..events.len())
                .map(|index| view.event_attribute(index, chain.timestamp()).as_instant()),
        );
        let mut error = false;
        let hit = chain.search(stamps, |step, index| {
            match steps[step].get(&self.events, events.start + index) {
                Outcome::True => true,
                Outcome::False => false,
                Outcome::Error => {
                    error = true;
                    false
                }
            }
        });
        match error {
            true => Outcome::Error,
            false => hit.into(),
        }
    }

    /// `a` on every row, then `b` only where `a` did not already decide (`decided`), combined.
    fn combine(
        &self,
        prepared: &PreparedQuery<'_>,
        a: &Step<'_>,
        b: &Step<'_>,
        rows: &[u32],
        decided: Outcome,
        join: fn(Outcome, Outcome) -> Outcome,
    ) -> Vec<Outcome> {
        let mut outcomes = self.run(prepared, a, rows);
        let pending: Vec<u32> = rows
            .iter()
            .zip(&outcomes)
            .filter(|(_, outcome)| **outcome != decided)
            .map(|(row, _)| *row)
            .collect();
        let mut right = self.run(prepared, b, &pending).into_iter();
        for outcome in outcomes.iter_mut().filter(|outcome| **outcome != decided) {
            // `right` has one outcome per pending row.
            *outcome = join(*outcome, right.next().unwrap_or(Outcome::Error));
        }
        outcomes
    }
}

#[cfg(test)]
impl PreparedQuery<'_> {
    /// Leaves answered from truth tables (for tests that must exercise them).
    pub(super) fn tabulated_leaves(&self) -> usize {
        fn count(step: &Step<'_>) -> usize {
            match step {
                Step::And(a, b) | Step::Or(a, b) => count(a) + count(b),
                Step::Not(a) => count(a),
                Step::Tabulated(_) | Step::Chain { .. } => 1,
                Step::Row(_) => 0,
            }
        }
        count(&self.root)
    }
}
