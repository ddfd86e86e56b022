//! The cost model: what one request may ask of the database, estimated before anything runs.
//!
//! A cost unit is about 0.1 ms of PostgreSQL work on the benchmark machine (a page of history
//! rows, an hour of rollups): the costs follow what the reads do (`bench/README.md`, "Volume"),
//! not how many fields a document names. Each root field has a rule (below, and in its
//! description, so GraphiQL shows it); every other selected field costs 1. Fragments count once
//! per place they are spread. A request's cost is the sum over its operations (a batch shares one
//! budget) and may not exceed `MAX_QUERY_COST` (default 5,000 ≈ half a second of database work).
//!
//! | field | cost |
//! |---|---|
//! | `predictPrice` | 5 |
//! | `predictPrices(inputs)` | 5 per input |
//! | `predictions(first)` | 10 + 2 per row (`first`, default `DEFAULT_PAGE_SIZE`) |
//! | `prediction` | 2 |
//! | `traffic`, `performance`, `shadowComparison` | 10 + 1 per 2 hours of the window |
//! | `drift` | 10 + 1 per hour of the window |
//! | `driftHistory` | 10 + 1 per 3 hours of the window |
//! | `driftReports(first)`, `modelEvents(first)` | 10 + 1 per row (`first`) |
//! | `recordOutcome`; `recordOutcomes(outcomes)` | 5; 5 per outcome |
//! | `reloadModels` | 100 |
//! | `predictionLogged` | 10 |
//! | anything else | 1 |
//!
//! The other limits bound the document itself, before its cost can be computed: lexical tokens
//! (`MAX_TOKENS`, counted before parsing), aliases and directives (`MAX_ALIASES`,
//! `MAX_DIRECTIVES`, counted through fragments). All refusals answer `QUERY_TOO_COSTLY` with
//! `extensions.limit` naming the limit.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_graphql::parser::types::{
    DocumentOperations, ExecutableDocument, Field, OperationDefinition, Selection, SelectionSet,
};
use async_graphql::{Name, Pos, ServerError, Value, Variables};
use chrono::{DateTime, Utc};

use crate::config::{LimitsConfig, defaults};
use crate::error::codes;

/// Cost of one prediction (model work and a log row).
pub const PREDICTION: usize = 5;
/// Fixed part of a database read (a round trip, planning).
pub const READ: usize = 10;
/// Cost of any field without a rule of its own.
pub const FIELD: usize = 1;
/// `reloadModels`: reads and checks every artifact.
pub const RELOAD: usize = 100;

/// Hours counted at most for one window (a window of 10,000 years is simply refused).
const MAX_HOURS: i64 = 100_000_000;

/// The limits of this module.
#[derive(Debug, Clone, Copy)]
pub struct CostLimits {
    /// `MAX_QUERY_COST`, per request.
    pub budget: usize,
    /// `MAX_ALIASES`, per document.
    pub aliases: usize,
    /// `MAX_DIRECTIVES`, per document.
    pub directives: usize,
    /// `MAX_TOKENS`, per document.
    pub tokens: usize,
}

impl From<&LimitsConfig> for CostLimits {
    fn from(limits: &LimitsConfig) -> Self {
        Self {
            budget: limits.max_query_cost,
            aliases: limits.max_aliases,
            directives: limits.max_directives,
            tokens: limits.max_tokens,
        }
    }
}

/// The cost a request has spent so far, shared by the operations of a batch.
#[derive(Debug, Clone, Default)]
pub struct CostMeter(Arc<AtomicUsize>);

impl CostMeter {
    /// Adds `cost` if the request's total stays within `budget`; otherwise adds nothing (a refused
    /// operation spends none of the budget) and returns the total it would have reached.
    pub fn spend(&self, cost: usize, budget: usize) -> Result<usize, usize> {
        let mut spent = self.0.load(Ordering::Relaxed);
        loop {
            let total = spent.saturating_add(cost);
            if total > budget {
                return Err(total);
            }
            match self.0.compare_exchange_weak(spent, total, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return Ok(total),
                Err(actual) => spent = actual,
            }
        }
    }
}

/// A `QUERY_TOO_COSTLY` refusal, counted in `query_refused_total{limit}`.
fn refusal(limit: &'static str, message: String, pos: Option<Pos>, extensions: &[(&str, Value)]) -> ServerError {
    metrics::counter!("query_refused_total", "limit" => limit).increment(1);
    let mut err = ServerError::new(message, pos);
    let ext = err.extensions.get_or_insert_with(Default::default);
    ext.set("code", codes::QUERY_TOO_COSTLY);
    for (name, value) in extensions {
        ext.set(*name, value.clone());
    }
    err
}

/// A refusal for a count over its limit (`limit`: `aliases`, `directives` or `tokens`). `count`
/// is `None` when counting stopped at the limit (tokens) or overflowed (a fragment bomb).
pub fn over_limit(limit: &'static str, count: Option<usize>, max: usize, pos: Option<Pos>) -> ServerError {
    let count = count.filter(|&c| c != usize::MAX);
    let mut extensions = vec![("limit", Value::from(limit)), ("max", Value::from(max as u64))];
    let message = match count {
        Some(count) => {
            extensions.push(("count", Value::from(count as u64)));
            format!("the document has {count} {limit}, more than the {max} allowed")
        }
        None => format!("the document has more than the {max} {limit} allowed"),
    };
    refusal(limit, message, pos, &extensions)
}

/// A refusal for a request over its budget.
pub fn over_budget(cost: usize, budget: usize, pos: Option<Pos>) -> ServerError {
    refusal(
        "cost",
        format!(
            "the request would cost {cost}, more than the budget of {budget} (each field's cost is in its \
             description): ask for fewer rows, a shorter window or fewer fields"
        ),
        pos,
        &[("limit", Value::from("cost")), ("cost", Value::from(cost as u64)), ("budget", Value::from(budget as u64))],
    )
}

/// Lexical tokens of a GraphQL document (punctuators, names, numbers, strings), stopping at
/// `stop` (the count is then `stop`). Whitespace, commas and comments are not tokens. Anything
/// the grammar does not know counts as one token: the parser refuses it later.
pub fn count_tokens(text: &str, stop: usize) -> usize {
    let bytes = text.as_bytes();
    let (mut i, mut tokens) = (0, 0);
    while i < bytes.len() && tokens < stop {
        match bytes[i] {
            b' ' | b'\t' | b'\n' | b'\r' | b',' => i += 1,
            b'#' => {
                while i < bytes.len() && bytes[i] != b'\n' && bytes[i] != b'\r' {
                    i += 1;
                }
            }
            b'"' if bytes[i..].starts_with(b"\"\"\"") => {
                i += 3;
                while i < bytes.len() && !bytes[i..].starts_with(b"\"\"\"") {
                    i += if bytes[i..].starts_with(b"\\\"\"\"") { 4 } else { 1 };
                }
                i += 3;
                tokens += 1;
            }
            b'"' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' && bytes[i] != b'\n' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
                tokens += 1;
            }
            b'.' if bytes[i..].starts_with(b"...") => {
                i += 3;
                tokens += 1;
            }
            b if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' => {
                // A name or a number (with sign, fraction and exponent).
                i += 1;
                while i < bytes.len()
                    && (bytes[i].is_ascii_alphanumeric() || matches!(bytes[i], b'_' | b'.' | b'+' | b'-'))
                {
                    // `1.5`, `2e-3`: the sign only right after an exponent marker.
                    if matches!(bytes[i], b'+' | b'-') && !matches!(bytes[i - 1], b'e' | b'E') {
                        break;
                    }
                    if bytes[i] == b'.' && bytes[i..].starts_with(b"...") {
                        break;
                    }
                    i += 1;
                }
                tokens += 1;
            }
            _ => {
                // A punctuator, or one character of something else (a UTF-8 sequence counts once).
                i += 1;
                while i < bytes.len() && (bytes[i] & 0xC0) == 0x80 {
                    i += 1;
                }
                tokens += 1;
            }
        }
    }
    tokens.min(stop)
}

/// Aliases and directives of a document, counted at each place a fragment is spread.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    /// Fields with an alias.
    pub aliases: usize,
    /// Directives (on operations, fields, fragments and spreads).
    pub directives: usize,
}

impl Shape {
    fn add(self, other: Self) -> Self {
        Self {
            aliases: self.aliases.saturating_add(other.aliases),
            directives: self.directives.saturating_add(other.directives),
        }
    }

    /// Measures every operation of `doc` (fragments once each, memoised: a fragment spread twice
    /// per level for 40 levels is counted in linear time, and saturates).
    pub fn of(doc: &ExecutableDocument) -> Self {
        let mut walker = ShapeWalker { doc, memo: HashMap::new() };
        let mut total = Self::default();
        for (_, operation) in doc.operations.iter() {
            let own = Self { aliases: 0, directives: operation.node.directives.len() };
            total = total.add(own).add(walker.set(&operation.node.selection_set.node));
        }
        total
    }
}

struct ShapeWalker<'a> {
    doc: &'a ExecutableDocument,
    memo: HashMap<&'a Name, Shape>,
}

impl<'a> ShapeWalker<'a> {
    fn set(&mut self, set: &'a SelectionSet) -> Shape {
        let mut shape = Shape::default();
        for selection in &set.items {
            let inner = match &selection.node {
                Selection::Field(field) => {
                    let field = &field.node;
                    let own = Shape { aliases: usize::from(field.alias.is_some()), directives: field.directives.len() };
                    own.add(self.set(&field.selection_set.node))
                }
                Selection::InlineFragment(inline) => Shape { aliases: 0, directives: inline.node.directives.len() }
                    .add(self.set(&inline.node.selection_set.node)),
                Selection::FragmentSpread(spread) => Shape { aliases: 0, directives: spread.node.directives.len() }
                    .add(self.fragment(&spread.node.fragment_name.node)),
            };
            shape = shape.add(inner);
        }
        shape
    }

    fn fragment(&mut self, name: &'a Name) -> Shape {
        if let Some(shape) = self.memo.get(name) {
            return *shape;
        }
        let Some(fragment) = self.doc.fragments.get(name) else { return Shape::default() };
        // A cycle (refused by validation) counts as nothing while it is being measured.
        self.memo.insert(name, Shape::default());
        let shape = Shape { aliases: 0, directives: fragment.node.directives.len() }
            .add(self.set(&fragment.node.selection_set.node));
        self.memo.insert(name, shape);
        shape
    }
}

/// The operation a request runs: the named one, or the document's only one.
pub fn selected<'a>(doc: &'a ExecutableDocument, name: Option<&str>) -> Option<&'a OperationDefinition> {
    match (&doc.operations, name) {
        (DocumentOperations::Single(op), None) => Some(&op.node),
        (DocumentOperations::Single(op), Some(_)) => Some(&op.node),
        (DocumentOperations::Multiple(ops), Some(name)) => ops.get(name).map(|op| &op.node),
        (DocumentOperations::Multiple(ops), None) if ops.len() == 1 => ops.values().next().map(|op| &op.node),
        _ => None,
    }
}

/// The cost of `operation` with `variables` (see the module's table).
pub fn of_operation(doc: &ExecutableDocument, operation: &OperationDefinition, variables: &Variables) -> usize {
    CostWalker::new(doc, operation, variables).root(&operation.selection_set.node)
}

/// The largest cost of any part of `doc`: each of its operations, and each fragment definition
/// expanded spread by spread, which is how async-graphql's validation visits it. Checked before
/// validation, so a document that expands exponentially (fragments spreading the next one twice,
/// level after level; 30 levels fit in 600 tokens) is refused before anything walks it inline.
pub fn largest(doc: &ExecutableDocument, variables: &Variables) -> usize {
    let mut largest = 0usize;
    for (_, operation) in doc.operations.iter() {
        largest = largest.max(of_operation(doc, &operation.node, variables));
    }
    if let Some((_, operation)) = doc.operations.iter().next() {
        let mut walker = CostWalker::new(doc, &operation.node, variables);
        for fragment in doc.fragments.values() {
            largest = largest.max(walker.nested(&fragment.node.selection_set.node));
        }
    }
    largest
}

struct CostWalker<'a> {
    doc: &'a ExecutableDocument,
    operation: &'a OperationDefinition,
    variables: &'a Variables,
    now: DateTime<Utc>,
    /// Cost of each fragment's fields below the root.
    memo: HashMap<&'a Name, usize>,
    /// Cost of each fragment spread at the root (its root fields and what is below them).
    root_memo: HashMap<&'a Name, usize>,
}

impl<'a> CostWalker<'a> {
    fn new(doc: &'a ExecutableDocument, operation: &'a OperationDefinition, variables: &'a Variables) -> Self {
        Self { doc, operation, variables, now: Utc::now(), memo: HashMap::new(), root_memo: HashMap::new() }
    }

    /// Cost of a root selection set. Fragments are measured once and counted at each spread
    /// (saturating), so doubling spreads cost linear time; a cycle counts nothing while it is
    /// being measured (validation refuses it).
    fn root(&mut self, set: &'a SelectionSet) -> usize {
        let mut cost = 0usize;
        for selection in &set.items {
            let part = match &selection.node {
                Selection::Field(field) => {
                    self.root_field(&field.node).saturating_add(self.nested(&field.node.selection_set.node))
                }
                Selection::InlineFragment(inline) => self.root(&inline.node.selection_set.node),
                Selection::FragmentSpread(spread) => {
                    let name = &spread.node.fragment_name.node;
                    match (self.root_memo.get(name), self.doc.fragments.get(name)) {
                        (Some(cost), _) => *cost,
                        (None, Some(fragment)) => {
                            self.root_memo.insert(name, 0);
                            let cost = self.root(&fragment.node.selection_set.node);
                            self.root_memo.insert(name, cost);
                            cost
                        }
                        (None, None) => 0,
                    }
                }
            };
            cost = cost.saturating_add(part);
        }
        cost
    }

    /// Every field below the root costs [`FIELD`].
    fn nested(&mut self, set: &'a SelectionSet) -> usize {
        let mut cost = 0usize;
        for selection in &set.items {
            let part = match &selection.node {
                Selection::Field(field) => FIELD.saturating_add(self.nested(&field.node.selection_set.node)),
                Selection::InlineFragment(inline) => self.nested(&inline.node.selection_set.node),
                Selection::FragmentSpread(spread) => {
                    let name = &spread.node.fragment_name.node;
                    match self.memo.get(name) {
                        Some(cost) => *cost,
                        None => match self.doc.fragments.get(name) {
                            Some(fragment) => {
                                self.memo.insert(name, 0);
                                let cost = self.nested(&fragment.node.selection_set.node);
                                self.memo.insert(name, cost);
                                cost
                            }
                            None => 0,
                        },
                    }
                }
            };
            cost = cost.saturating_add(part);
        }
        cost
    }

    /// An argument's value with the request's variables (or the variable's default) filled in.
    fn argument(&self, field: &Field, name: &str) -> Option<Value> {
        let value = field.get_argument(name)?.node.clone();
        value
            .into_const_with(|variable| {
                let given = self.variables.get(&variable).cloned();
                let default = || {
                    self.operation
                        .variable_definitions
                        .iter()
                        .find(|d| d.node.name.node == variable)
                        .and_then(|d| d.node.default_value.as_ref().map(|v| v.node.clone()))
                };
                Ok::<_, std::convert::Infallible>(given.or_else(default).unwrap_or(Value::Null))
            })
            .ok()
    }

    fn count(&self, field: &Field, name: &str, default: usize) -> usize {
        match self.argument(field, name) {
            Some(Value::Number(n)) => n.as_i64().map_or(default, |n| n.clamp(0, MAX_HOURS) as usize),
            _ => default,
        }
    }

    fn list_len(&self, field: &Field, name: &str) -> usize {
        match self.argument(field, name) {
            Some(Value::List(items)) => items.len(),
            Some(Value::Null) | None => 0,
            Some(_) => 1,
        }
    }

    /// Hours of a `[from, to)` window (`to` defaults to now, `from` to `to - default_hours`).
    fn hours(&self, field: &Field, default_hours: i64) -> usize {
        let time = |name| match self.argument(field, name) {
            // Parsed as the `DateTime` scalar parses it (chrono's `FromStr`, laxer than RFC 3339).
            Some(Value::String(s)) => s.parse::<DateTime<Utc>>().ok(),
            _ => None,
        };
        let to = time("to").unwrap_or(self.now);
        let hours = match time("from") {
            Some(from) => (to - from).num_seconds().div_euclid(3600) + 1,
            None => default_hours,
        };
        hours.clamp(0, MAX_HOURS) as usize
    }

    fn root_field(&self, field: &Field) -> usize {
        let rows = |name, default| self.count(field, name, default);
        match field.name.node.as_str() {
            "predictPrice" | "recordOutcome" => PREDICTION,
            "predictPrices" => PREDICTION.saturating_mul(self.list_len(field, "inputs")),
            "recordOutcomes" => PREDICTION.saturating_mul(self.list_len(field, "outcomes")),
            "predictions" => READ + 2 * rows("first", defaults::DEFAULT_PAGE_SIZE),
            "prediction" => 2,
            "traffic" => READ + self.hours(field, 24) / 2,
            "performance" | "shadowComparison" => READ + self.hours(field, 7 * 24) / 2,
            "drift" => READ + self.hours(field, 24),
            "driftHistory" => READ + self.hours(field, 30 * 24) / 3,
            "driftReports" | "modelEvents" => READ + rows("first", 50),
            "reloadModels" => RELOAD,
            "predictionLogged" => READ,
            _ => FIELD,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::fmt::Write;

    use async_graphql::parser::parse_query;
    use serde_json::json;

    use super::*;

    fn cost(query: &str, variables: serde_json::Value) -> usize {
        let doc = parse_query(query).expect("parses");
        let op = selected(&doc, None).expect("one operation");
        of_operation(&doc, op, &Variables::from_json(variables))
    }

    #[test]
    fn tokens_are_counted_like_the_grammar_says() {
        assert_eq!(count_tokens("{ a }", 100), 3);
        assert_eq!(count_tokens("query Q($x: Int = -1.5e-3) { a(x: $x) @include(if: true) }", 100), 26);
        assert_eq!(count_tokens("# comment\n{ a, b,,, c }", 100), 5);
        assert_eq!(count_tokens(r#"{ a(s: "x \" y", t: """block "" " """) }"#, 100), 11);
        assert_eq!(count_tokens("{ ...F } fragment F on Query { é }", 100), 11);
        assert_eq!(count_tokens(&"{ a }".repeat(1000), 50), 50, "stops at the limit");
    }

    #[test]
    fn aliases_and_directives_count_through_fragments() {
        let shape = |q: &str| Shape::of(&parse_query(q).unwrap());
        assert_eq!(shape("{ a: x b: x c }"), Shape { aliases: 2, directives: 0 });
        assert_eq!(
            shape("query @d { x @include(if: true) ...F ... @skip(if: false) { y } } fragment F on Q @d { a: x }"),
            Shape { aliases: 1, directives: 4 }
        );
        // Each level spreads the next twice: 2^41 aliases, measured in linear time.
        let mut doc = String::from("{ ...F0 }");
        for i in 0..40 {
            write!(doc, " fragment F{i} on Q {{ a: x {{ ...F{n} }} b: x {{ ...F{n} }} }}", n = i + 1).unwrap();
        }
        doc.push_str(" fragment F40 on Q { c }");
        assert_eq!(shape(&doc).aliases, (1usize << 41) - 2);
        assert_eq!(shape("{ ...A } fragment A on Q { a: x ...A }").aliases, 1, "a cycle terminates");
    }

    #[test]
    fn costs_follow_rows_and_windows_with_variables() {
        assert_eq!(cost("{ predictions { nodes { id } } }", json!({})), 10 + 2 * 20 + 2);
        assert_eq!(cost("query($n: Int) { predictions(first: $n) { nodes { id } } }", json!({"n": 100})), 212);
        assert_eq!(cost("query($n: Int = 5) { predictions(first: $n) { nodes { id } } }", json!({})), 22);
        assert_eq!(cost("{ traffic { requests } }", json!({})), 10 + 12 + 1);
        let week =
            cost(r#"{ traffic(from: "2026-01-01T00:00:00Z", to: "2026-01-08T00:00:00Z") { requests } }"#, json!({}));
        assert_eq!(week, 10 + 169 / 2 + 1);
        let year = cost(
            "query($f: DateTime) { performance(model: \"m\", from: $f) { mae } }",
            json!({"f": "2000-01-01T00:00:00Z"}),
        );
        assert!(year > 100_000, "{year}");
        let batch = "query($b: [HouseInput!]!) { predictPrices(inputs: $b) { index } }";
        assert_eq!(cost(batch, json!({"b": [{}, {}, {}]})), 15 + 1);
        assert_eq!(cost("{ a: models { name } b: models { name } }", json!({})), 4);
    }

    #[test]
    fn spreads_that_double_at_the_root_are_measured_in_linear_time() {
        // 60 levels, each spreading the next twice: 2^60 paths.
        let mut doc = String::from("{ ...F0 }");
        for i in 0..60 {
            write!(doc, " fragment F{i} on Query {{ ...F{n} ...F{n} }}", n = i + 1).unwrap();
        }
        doc.push_str(" fragment F60 on Query { traffic { requests } }");
        assert_eq!(cost(&doc, json!({})), usize::MAX, "saturates");
        let cycle = "{ ...A } fragment A on Query { ...A ...A models { name } }";
        assert_eq!(cost(cycle, json!({})), 2);
        let parsed = parse_query(&doc).unwrap();
        assert_eq!(crate::graphql::limits::Depths::of(&parsed).query, 2);
        assert_eq!(largest(&parsed, &Variables::default()), usize::MAX);
        // A fragment no operation uses is still expanded by validation: it counts too.
        let unused = doc.replacen("{ ...F0 }", "{ __typename }", 1);
        assert!(largest(&parse_query(&unused).unwrap(), &Variables::default()) > 1 << 60);
    }

    #[test]
    fn windows_are_read_as_the_datetime_scalar_reads_them() {
        let lax = cost(r#"{ drift(model: "m", from: "2000-1-1T00:00:00Z") { status } }"#, json!({}));
        assert!(lax > 200_000, "{lax}");
    }

    #[test]
    fn aliases_of_a_costly_field_add_up() {
        let one = cost("{ traffic { requests } }", json!({}));
        let many: String = (0..300).map(|i| format!("t{i}: traffic {{ requests }} ")).collect();
        assert_eq!(cost(&format!("{{ {many} }}"), json!({})), 300 * one);
        let fragment = "{ ...T ...T } fragment T on Query { traffic { requests } }";
        assert_eq!(cost(fragment, json!({})), 2 * one, "a fragment counts where it is spread");
    }
}
