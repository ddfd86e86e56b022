//! Query depth limits, with a budget of their own for introspection.
//!
//! async-graphql's `limit_depth` counts every field alike, so a limit that protects the resolvers
//! (a real query needs 5 levels; 10 are allowed) refuses the standard introspection query, which
//! nests `ofType` about eight levels inside `__schema { types { fields { type` — and with it
//! GraphiQL's docs, graphql-codegen and every client that fetches the schema. Here the fields
//! under `__schema`/`__type` are held to [`LimitsConfig::max_introspection_depth`] and everything
//! else to [`LimitsConfig::max_query_depth`]. Both are checked right after parsing, before
//! validation; the error is `GRAPHQL_VALIDATION_FAILED`, like every other limit.
//!
//! Documents that parsed and passed the depth limits are kept in a [`DocumentCache`], so a repeated
//! document is cloned, not parsed; an operation that validated is not validated again while the
//! variables are surely valid for it (see [`super::documents`] for why that answers the same).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, OnceLock};

use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextParseQuery, NextPrepareRequest, NextValidation,
};
use async_graphql::parser::types::{ExecutableDocument, Field, Selection, SelectionSet};
use async_graphql::{Name, Request, ServerError, ServerResult, ValidationResult, Variables};

use super::cost::{self, CostLimits, CostMeter, Shape};
use super::documents::{CachedDocument, DocumentCache};

use crate::config::LimitsConfig;
use crate::error::codes;

/// The message of every depth refusal (the same words as async-graphql's own limit).
pub const TOO_DEEP: &str = "Query is nested too deep.";

/// The two depth budgets, and whether introspection is allowed at all.
#[derive(Debug, Clone, Copy)]
pub struct DepthLimits {
    /// Deepest selection outside introspection.
    pub query: usize,
    /// Deepest selection under `__schema` / `__type`.
    pub introspection: usize,
    /// `INTROSPECTION`: when off, `__schema`/`__type` are refused with an error (async-graphql
    /// alone would answer `null`, which a client cannot tell from an empty schema).
    pub introspection_allowed: bool,
}

impl From<&LimitsConfig> for DepthLimits {
    fn from(limits: &LimitsConfig) -> Self {
        Self {
            query: limits.max_query_depth,
            introspection: limits.max_introspection_depth,
            introspection_allowed: limits.introspection,
        }
    }
}

/// The deepest regular and introspection selections of a document, over all its operations.
/// Depth counts nested fields (a root field with only leaves is 2), fragments add none.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Depths {
    /// Outside `__schema` / `__type`.
    pub query: usize,
    /// Under `__schema` / `__type` (counting the root field).
    pub introspection: usize,
}

impl Depths {
    /// Measures `doc`. Fragments are measured once each (a document of fragments spreading each
    /// other twice per level costs linear time, not exponential); a fragment cycle, which
    /// validation refuses later, counts as no depth here.
    pub fn of(doc: &ExecutableDocument) -> Self {
        let mut walker = Walker { doc, memo: HashMap::new() };
        let mut depths = Self::default();
        for (_, operation) in doc.operations.iter() {
            let mut roots = Vec::new();
            walker.root_fields(&operation.node.selection_set.node, &mut roots, &mut HashSet::new());
            for field in roots {
                let depth = 1 + walker.depth(&field.selection_set.node);
                if matches!(field.name.node.as_str(), "__schema" | "__type") {
                    depths.introspection = depths.introspection.max(depth);
                } else {
                    depths.query = depths.query.max(depth);
                }
            }
        }
        depths
    }

    /// Whether both are within `limits`.
    pub fn within(&self, limits: DepthLimits) -> bool {
        self.query <= limits.query && self.introspection <= limits.introspection
    }
}

struct Walker<'a> {
    doc: &'a ExecutableDocument,
    /// Depth of each fragment's selection set; `None` while it is being measured (a cycle).
    memo: HashMap<&'a Name, Option<usize>>,
}

impl<'a> Walker<'a> {
    /// The operation's root fields, looking through fragments (`{ ...F } fragment F on Query {
    /// __schema { … } }` is introspection too). Each fragment is looked into once (`seen`): its
    /// root fields are the same wherever it is spread, and a document whose fragments spread the
    /// next one twice per level would otherwise take 2^levels steps (and a cycle forever).
    fn root_fields(&self, set: &'a SelectionSet, out: &mut Vec<&'a Field>, seen: &mut HashSet<&'a Name>) {
        for selection in &set.items {
            match &selection.node {
                Selection::Field(field) => out.push(&field.node),
                Selection::InlineFragment(inline) => {
                    self.root_fields(&inline.node.selection_set.node, out, seen);
                }
                Selection::FragmentSpread(spread) => {
                    let name = &spread.node.fragment_name.node;
                    if seen.insert(name)
                        && let Some(fragment) = self.doc.fragments.get(name)
                    {
                        self.root_fields(&fragment.node.selection_set.node, out, seen);
                    }
                }
            }
        }
    }

    /// Depth below a selection set: 0 for leaves, 1 + the deepest child field otherwise.
    fn depth(&mut self, set: &'a SelectionSet) -> usize {
        let mut deepest = 0;
        for selection in &set.items {
            let depth = match &selection.node {
                Selection::Field(field) => 1 + self.depth(&field.node.selection_set.node),
                Selection::InlineFragment(inline) => self.depth(&inline.node.selection_set.node),
                Selection::FragmentSpread(spread) => self.fragment_depth(&spread.node.fragment_name.node),
            };
            deepest = deepest.max(depth);
        }
        deepest
    }

    fn fragment_depth(&mut self, name: &'a Name) -> usize {
        match self.memo.get(name) {
            Some(Some(depth)) => return *depth,
            Some(None) => return 0,
            None => {}
        }
        let Some(fragment) = self.doc.fragments.get(name) else { return 0 };
        self.memo.insert(name, None);
        let depth = self.depth(&fragment.node.selection_set.node);
        self.memo.insert(name, Some(depth));
        depth
    }
}

/// A refusal, with its code.
fn refusal(message: &str, pos: Option<async_graphql::Pos>) -> ServerError {
    let mut err = ServerError::new(message, pos);
    err.extensions.get_or_insert_with(Default::default).set("code", codes::GRAPHQL_VALIDATION_FAILED);
    err
}

/// Whether a parse error is the parser's or async-graphql's recursion guard: a depth limit
/// reached while parsing, answered like the depth limit itself.
fn is_recursion_limit(err: &ServerError) -> bool {
    err.message.starts_with("The recursion depth of the query cannot be greater than")
        || err.message.contains("recursion limit exceeded")
}

/// Extension factory enforcing [`DepthLimits`] and the [`CostLimits`] (and caching the documents
/// that pass them).
pub struct QueryLimits {
    limits: DepthLimits,
    cost: Option<CostLimits>,
    cache: Arc<DocumentCache>,
}

impl QueryLimits {
    /// The extension for `limits`, with an empty document cache.
    pub fn new(limits: DepthLimits) -> Self {
        Self { limits, cost: None, cache: Arc::default() }
    }

    /// Also enforces the cost model's limits.
    #[must_use]
    pub fn with_cost(self, cost: CostLimits) -> Self {
        Self { cost: Some(cost), ..self }
    }

    /// Its document cache (tests read how many validations it spared).
    pub fn cache(&self) -> Arc<DocumentCache> {
        self.cache.clone()
    }
}

impl ExtensionFactory for QueryLimits {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(QueryLimitsExtension {
            limits: self.limits,
            cost_limits: self.cost,
            cost: OnceLock::new(),
            cache: self.cache.clone(),
            operation_name: OnceLock::new(),
            document: OnceLock::new(),
            reuse: OnceLock::new(),
        })
    }
}

/// One per request: what `parse_query` learnt, for `validation`.
struct QueryLimitsExtension {
    limits: DepthLimits,
    cost_limits: Option<CostLimits>,
    /// The selected operation's cost (from `parse_query`, checked once the operation validated).
    cost: OnceLock<(usize, Option<async_graphql::Pos>)>,
    cache: Arc<DocumentCache>,
    /// The request's operation name (from `prepare_request`, which runs first).
    operation_name: OnceLock<Option<String>>,
    /// The request's document, when it is cached.
    document: OnceLock<Arc<CachedDocument>>,
    /// The validation result this request reuses instead of validating.
    reuse: OnceLock<ValidationResult>,
}

impl QueryLimitsExtension {
    fn operation_name(&self) -> Option<&str> {
        self.operation_name.get().and_then(Option::as_deref)
    }

    /// Remembers what the request's operation costs.
    fn measure(&self, doc: &ExecutableDocument, variables: &Variables) {
        if self.cost_limits.is_some()
            && let Some(operation) = cost::selected(doc, self.operation_name())
        {
            let _ = self.cost.set((cost::of_operation(doc, operation, variables), doc_pos(doc)));
        }
    }
}

/// Where a document's first operation starts (for refusals of the whole document).
fn doc_pos(doc: &ExecutableDocument) -> Option<async_graphql::Pos> {
    doc.operations.iter().next().map(|(_, op)| op.pos)
}

#[async_graphql::async_trait::async_trait]
impl Extension for QueryLimitsExtension {
    async fn prepare_request(
        &self,
        ctx: &ExtensionContext<'_>,
        request: Request,
        next: NextPrepareRequest<'_>,
    ) -> ServerResult<Request> {
        let _ = self.operation_name.set(request.operation_name.clone());
        next.run(ctx, request).await
    }

    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        if let Some(cached) = self.cache.get(query) {
            let registry = &ctx.schema_env.registry;
            if let Some(result) = self.cache.reusable_validation(registry, &cached, self.operation_name(), variables) {
                let _ = self.reuse.set(result);
            }
            let doc = cached.doc.clone();
            self.measure(&doc, variables);
            let _ = self.document.set(cached);
            return Ok(doc);
        }
        if let Some(limits) = self.cost_limits {
            let tokens = cost::count_tokens(query, limits.tokens.saturating_add(1));
            if tokens > limits.tokens {
                return Err(cost::over_limit("tokens", None, limits.tokens, None));
            }
            // Measured on a parse of our own, before async-graphql's: its parse step checks the
            // recursion depth by following every fragment spread (2^levels steps for fragments
            // that spread the next one twice; 30 levels fit in 600 tokens), and its validation
            // visits fragments spread by spread too. A document that does not parse is left to
            // async-graphql, which says why.
            if let Ok(pre) = async_graphql::parser::parse_query(query) {
                let pos = doc_pos(&pre);
                let shape = Shape::of(&pre);
                if shape.aliases > limits.aliases {
                    return Err(cost::over_limit("aliases", Some(shape.aliases), limits.aliases, pos));
                }
                if shape.directives > limits.directives {
                    return Err(cost::over_limit("directives", Some(shape.directives), limits.directives, pos));
                }
                let largest = cost::largest(&pre, variables);
                if largest > limits.budget {
                    return Err(cost::over_budget(largest, limits.budget, pos));
                }
            }
        }
        let doc = next.run(ctx, query, variables).await.map_err(|err| {
            if is_recursion_limit(&err) { refusal(TOO_DEEP, err.locations.first().copied()) } else { err }
        })?;
        let depths = Depths::of(&doc);
        let pos = doc.operations.iter().next().map(|(_, op)| op.pos);
        if depths.introspection > 0 && !self.limits.introspection_allowed {
            return Err(refusal("introspection is disabled on this server; use the published schema.graphql", pos));
        }
        if !depths.within(self.limits) {
            return Err(refusal(TOO_DEEP, pos));
        }
        self.measure(&doc, variables);
        if let Some(cached) = self.cache.put(query, &doc) {
            let _ = self.document.set(cached);
        }
        Ok(doc)
    }

    async fn validation(
        &self,
        ctx: &ExtensionContext<'_>,
        next: NextValidation<'_>,
    ) -> Result<ValidationResult, Vec<ServerError>> {
        let result = if let Some(result) = self.reuse.get() {
            *result
        } else {
            let result = next.run(ctx).await?;
            if let Some(cached) = self.document.get() {
                cached.remember_validated(self.operation_name(), result);
            }
            result
        };
        // The cost of an operation that validated; a batch's operations share one budget.
        if let (Some(limits), Some(&(cost, pos))) = (self.cost_limits, self.cost.get()) {
            let spent = match ctx.data_opt::<CostMeter>() {
                Some(meter) => meter.spend(cost, limits.budget),
                None if cost > limits.budget => Err(cost),
                None => Ok(cost),
            };
            if let Err(total) = spent {
                return Err(vec![cost::over_budget(total, limits.budget, pos)]);
            }
        }
        Ok(result)
    }
}

#[cfg(test)]
mod tests {
    use std::fmt::Write;

    use async_graphql::parser::parse_query;
    use async_graphql::{EmptyMutation, EmptySubscription, Object, Schema};
    use serde_json::json;

    use super::*;

    struct Root;

    #[Object]
    impl Root {
        /// Twice `n`.
        async fn double(&self, n: i32) -> i32 {
            n.saturating_mul(2)
        }
    }

    struct Costly;

    #[Object]
    impl Costly {
        /// `first` items: its complexity is computed from the argument.
        #[graphql(complexity = "first.max(0) as usize + child_complexity")]
        async fn items(&self, first: i32) -> Vec<i32> {
            (0..first.clamp(0, 10)).collect()
        }
    }

    const LIMITS: DepthLimits = DepthLimits { query: 10, introspection: 10, introspection_allowed: true };

    /// A schema of `root` with the extension (and a complexity limit), and its cache.
    fn schema_of<R: async_graphql::ObjectType + 'static>(
        root: R,
    ) -> (Schema<R, EmptyMutation, EmptySubscription>, Arc<DocumentCache>) {
        let limits = QueryLimits::new(LIMITS);
        let cache = limits.cache();
        (Schema::build(root, EmptyMutation, EmptySubscription).limit_complexity(50).extension(limits).finish(), cache)
    }

    fn schema() -> (Schema<Root, EmptyMutation, EmptySubscription>, Arc<DocumentCache>) {
        schema_of(Root)
    }

    fn request(query: &str, variables: serde_json::Value) -> Request {
        Request::new(query).variables(Variables::from_json(variables))
    }

    fn errors(response: &async_graphql::Response) -> serde_json::Value {
        serde_json::to_value(&response.errors).expect("serialises")
    }

    #[tokio::test]
    async fn a_validated_operation_is_not_validated_again_while_its_variables_are_surely_valid() {
        let (schema, cache) = schema();
        let query = "query($n: Int!) { double(n: $n) }";
        assert_eq!(
            schema.execute(request(query, json!({"n": 2}))).await.data.into_json().unwrap(),
            json!({"double": 4})
        );
        assert_eq!(cache.reused(), 0, "the first request validates");
        assert_eq!(
            schema.execute(request(query, json!({"n": 3}))).await.data.into_json().unwrap(),
            json!({"double": 6})
        );
        assert_eq!(cache.reused(), 1, "the second reuses the result");

        // Variables it cannot vouch for are validated in full: async-graphql's own errors, exactly
        // as from a schema that never saw the document.
        for bad in [json!({"n": "two"}), json!({"n": null}), json!({"n": 2.5})] {
            let cached = schema.execute(request(query, bad.clone())).await;
            let fresh = self::schema().0.execute(request(query, bad.clone())).await;
            assert!(!cached.errors.is_empty(), "{bad}");
            assert_eq!(errors(&cached), errors(&fresh), "{bad}");
        }
        assert_eq!(cache.reused(), 1);

        // A named operation of a multi-operation document is remembered by its name.
        let two = "query A($n: Int!) { double(n: $n) } query B { double(n: 1) }";
        for name in ["A", "A", "B", "B"] {
            let response = schema.execute(request(two, json!({"n": 5})).operation_name(name)).await;
            assert!(response.errors.is_empty(), "{:?}", response.errors);
        }
        assert_eq!(cache.reused(), 3);
    }

    #[tokio::test]
    async fn a_schema_whose_complexity_depends_on_arguments_validates_every_time() {
        let (schema, cache) = schema_of(Costly);
        let query = "query($first: Int!) { items(first: $first) }";
        assert!(schema.execute(request(query, json!({"first": 3}))).await.errors.is_empty());
        let over = schema.execute(request(query, json!({"first": 100}))).await;
        assert_eq!(over.errors[0].message, "Query is too complex.");
        assert_eq!(cache.reused(), 0);
    }

    fn depths(query: &str) -> Depths {
        Depths::of(&parse_query(query).expect("parses"))
    }

    /// `field { field { … name … } }`: `levels` fields around a leaf.
    fn nested(field: &str, levels: usize) -> String {
        format!("{}name{}", format!("{field} {{ ").repeat(levels), " }".repeat(levels))
    }

    #[test]
    fn depth_counts_nested_fields_not_fragments() {
        assert_eq!(depths("{ a }"), Depths { query: 1, introspection: 0 });
        assert_eq!(depths("{ a { b { c } } }").query, 3);
        assert_eq!(depths("{ a { ...F } } fragment F on T { b { ... on T { c } } }").query, 3);
    }

    #[test]
    fn introspection_is_measured_apart_from_the_query() {
        let d = depths("{ model { name } __schema { types { fields { type { ofType { name } } } } } }");
        assert_eq!(d, Depths { query: 2, introspection: 6 });
        let through_fragment = depths("{ ...Root } fragment Root on Query { __type(name: \"X\") { ofType { name } } }");
        assert_eq!(through_fragment, Depths { query: 0, introspection: 3 });
    }

    #[test]
    fn the_limits_refuse_only_what_exceeds_them() {
        let limits = DepthLimits { query: 3, introspection: 5, introspection_allowed: true };
        assert!(depths("{ a { b { c } } }").within(limits));
        assert!(!depths("{ a { b { c { d } } } }").within(limits));
        // __schema + 3 levels + the leaf = 5.
        assert!(depths(&format!("{{ __schema {{ {} }} }}", nested("types", 3))).within(limits));
        assert!(!depths(&format!("{{ __schema {{ {} }} }}", nested("types", 4))).within(limits));
    }

    #[test]
    fn fragment_cycles_and_fragment_bombs_terminate() {
        // The inner spread of the cycle counts as nothing: a { b }.
        assert_eq!(depths("{ a { ...F } } fragment F on T { b { ...F } }").query, 2);
        // Each level spreads the next twice: 2^40 paths, measured once per fragment.
        let mut doc = String::from("{ a { ...F0 } }");
        for i in 0..40 {
            write!(doc, " fragment F{i} on T {{ x: b {{ ...F{n} }} y: b {{ ...F{n} }} }}", n = i + 1).unwrap();
        }
        doc.push_str(" fragment F40 on T { c }");
        assert_eq!(depths(&doc).query, 42);
    }
}
