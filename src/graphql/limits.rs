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
//! Parsing is the largest single cost of a small request (the pest parser), and clients send the
//! same few documents over and over: documents that parsed and passed the depth limits are kept in
//! a bounded LRU cache keyed by their text, so a repeated document is cloned, not parsed.
//! Validation still runs on every request (it depends on the variables).

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};

use async_graphql::extensions::{Extension, ExtensionContext, ExtensionFactory, NextParseQuery};
use async_graphql::parser::types::{ExecutableDocument, Field, Selection, SelectionSet};
use async_graphql::{Name, ServerError, ServerResult, Variables};

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
            walker.root_fields(&operation.node.selection_set.node, &mut roots, 0);
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

/// Fragments spread into fragments at the root: deeper than this is a cycle (validation refuses
/// it), not a shape worth measuring.
const MAX_ROOT_FRAGMENT_NESTING: usize = 64;

impl<'a> Walker<'a> {
    /// The operation's root fields, looking through fragments (`{ ...F } fragment F on Query {
    /// __schema { … } }` is introspection too).
    fn root_fields(&self, set: &'a SelectionSet, out: &mut Vec<&'a Field>, nesting: usize) {
        if nesting > MAX_ROOT_FRAGMENT_NESTING {
            return;
        }
        for selection in &set.items {
            match &selection.node {
                Selection::Field(field) => out.push(&field.node),
                Selection::InlineFragment(inline) => {
                    self.root_fields(&inline.node.selection_set.node, out, nesting + 1);
                }
                Selection::FragmentSpread(spread) => {
                    if let Some(fragment) = self.doc.fragments.get(&spread.node.fragment_name.node) {
                        self.root_fields(&fragment.node.selection_set.node, out, nesting + 1);
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

/// Distinct documents kept parsed (checked at compile time: a constant, not a runtime panic).
const CACHED_DOCUMENTS: NonZeroUsize = NonZeroUsize::new(512).expect("512 is not zero");
/// Longer documents are parsed every time (they are rare, and would crowd the cache).
const MAX_CACHED_QUERY_LEN: usize = 16 * 1024;

/// Parsed documents that passed the depth limits, by their text.
type DocumentCache = Mutex<lru::LruCache<String, Arc<ExecutableDocument>>>;

/// Extension factory enforcing [`DepthLimits`] (and caching the documents that pass them).
pub struct QueryLimits {
    limits: DepthLimits,
    cache: Arc<DocumentCache>,
}

impl QueryLimits {
    /// The extension for `limits`, with an empty document cache.
    pub fn new(limits: DepthLimits) -> Self {
        Self { limits, cache: Arc::new(Mutex::new(lru::LruCache::new(CACHED_DOCUMENTS))) }
    }
}

impl ExtensionFactory for QueryLimits {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(QueryLimitsExtension { limits: self.limits, cache: self.cache.clone() })
    }
}

struct QueryLimitsExtension {
    limits: DepthLimits,
    cache: Arc<DocumentCache>,
}

impl QueryLimitsExtension {
    fn cached(&self, query: &str) -> Option<ExecutableDocument> {
        let mut cache = self.cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        cache.get(query).map(|doc| ExecutableDocument::clone(doc))
    }

    fn remember(&self, query: &str, doc: &ExecutableDocument) {
        if query.len() <= MAX_CACHED_QUERY_LEN {
            let mut cache = self.cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            cache.put(query.to_owned(), Arc::new(doc.clone()));
        }
    }
}

#[async_graphql::async_trait::async_trait]
impl Extension for QueryLimitsExtension {
    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        if let Some(doc) = self.cached(query) {
            return Ok(doc);
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
        self.remember(query, &doc);
        Ok(doc)
    }
}

#[cfg(test)]
mod tests {
    use std::fmt::Write;

    use async_graphql::parser::parse_query;

    use super::*;

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
