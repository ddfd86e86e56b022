//! The cache of documents that parsed, passed the depth limits and, per operation, validated.
//!
//! Parsing (the pest parser) and validation (22 rules walking the document) are the largest costs
//! of a small request after the kernel's TCP, and clients send the same few documents over and
//! over. So a document that parsed is kept by its text and cloned, not parsed again; and once one
//! of its operations validated, that operation is not validated again while the request's
//! variables are *surely valid* for it.
//!
//! Why skipping validation then answers exactly as validating would: every async-graphql rule
//! but one looks at the document alone (and the operation name); `ArgumentsOfCorrectType` also
//! checks the values of the variables an argument uses, against the argument's type, which
//! `VariableInAllowedPosition` (a document rule, so passed already) ties to the variable's
//! declared type. [`variables_surely_valid`] checks each given variable against its declared
//! type with async-graphql's own rules, and says "not sure" for anything it cannot vouch for; a
//! request it is not sure of is validated in full, so every invalid request still gets
//! async-graphql's own error. Two more conditions hold the equivalence: the operation must be the
//! one the request selects (the document's only one, or the one named), and no field of the schema
//! may compute its complexity from its arguments (then the complexity limit would depend on the
//! values; [`validation_reusable`] refuses such a schema, and a test keeps ours free of them).

use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use async_graphql::parser::types::{BaseType, DocumentOperations, ExecutableDocument, OperationDefinition, Type};
use async_graphql::registry::{MetaType, MetaTypeName, Registry};
use async_graphql::{ValidationResult, Value as ConstValue, Variables};

/// Distinct documents kept parsed (checked at compile time: a constant, not a runtime panic).
const CACHED_DOCUMENTS: NonZeroUsize = NonZeroUsize::new(512).expect("512 is not zero");
/// Longer documents are parsed every time (they are rare, and would crowd the cache).
const MAX_CACHED_QUERY_LEN: usize = 16 * 1024;

/// A cached document and the validation results of the operations that validated.
pub struct CachedDocument {
    /// The parsed document (each request executes a clone of it).
    pub doc: ExecutableDocument,
    /// By operation name (`None`: the document's only operation). At most one entry per operation
    /// of `doc` (only names that select one are stored), so it stays as small as the document.
    validated: Mutex<Vec<(Option<String>, ValidationResult)>>,
}

impl CachedDocument {
    /// The validation result of the operation `operation_name` selects, if it validated before.
    pub fn validated(&self, operation_name: Option<&str>) -> Option<ValidationResult> {
        let validated = self.validated.lock().unwrap_or_else(PoisonError::into_inner);
        validated.iter().find(|(name, _)| name.as_deref() == operation_name).map(|(_, result)| *result)
    }

    /// Remembers that the operation `operation_name` selects validated, with `result`; a name
    /// that selects no operation is not stored.
    pub fn remember_validated(&self, operation_name: Option<&str>, result: ValidationResult) {
        if selected_operation(&self.doc, operation_name).is_none() {
            return;
        }
        let mut validated = self.validated.lock().unwrap_or_else(PoisonError::into_inner);
        if !validated.iter().any(|(name, _)| name.as_deref() == operation_name) {
            validated.push((operation_name.map(str::to_owned), result));
        }
    }
}

/// A bounded LRU of [`CachedDocument`]s by their text, shared by all requests to one schema.
pub struct DocumentCache {
    documents: Mutex<lru::LruCache<String, Arc<CachedDocument>>>,
    /// Whether this schema allows reusing validation results ([`validation_reusable`]), computed
    /// on first use from the schema's registry.
    reusable: OnceLock<bool>,
    /// Validations skipped because a result was reused (observable by tests).
    reused: AtomicU64,
}

impl Default for DocumentCache {
    fn default() -> Self {
        Self {
            documents: Mutex::new(lru::LruCache::new(CACHED_DOCUMENTS)),
            reusable: OnceLock::new(),
            reused: 0.into(),
        }
    }
}

impl DocumentCache {
    /// The cached document for `query`.
    pub fn get(&self, query: &str) -> Option<Arc<CachedDocument>> {
        self.documents.lock().unwrap_or_else(PoisonError::into_inner).get(query).cloned()
    }

    /// Caches `doc` as the document of `query` (unless `query` is too long to be worth it).
    pub fn put(&self, query: &str, doc: &ExecutableDocument) -> Option<Arc<CachedDocument>> {
        if query.len() > MAX_CACHED_QUERY_LEN {
            return None;
        }
        let cached = Arc::new(CachedDocument { doc: doc.clone(), validated: Mutex::default() });
        self.documents.lock().unwrap_or_else(PoisonError::into_inner).put(query.to_owned(), cached.clone());
        Some(cached)
    }

    /// The validation result `request` may reuse instead of validating: the selected operation of
    /// `cached` validated before, the schema allows reuse, and `variables` are surely valid.
    pub fn reusable_validation(
        &self,
        registry: &Registry,
        cached: &CachedDocument,
        operation_name: Option<&str>,
        variables: &Variables,
    ) -> Option<ValidationResult> {
        if !*self.reusable.get_or_init(|| validation_reusable(registry)) {
            return None;
        }
        let result = cached.validated(operation_name)?;
        let operation = selected_operation(&cached.doc, operation_name)?;
        if !variables_surely_valid(registry, operation, variables) {
            return None;
        }
        self.reused.fetch_add(1, Ordering::Relaxed);
        Some(result)
    }

    /// How many validations were skipped so far.
    pub fn reused(&self) -> u64 {
        self.reused.load(Ordering::Relaxed)
    }
}

/// The operation a request with `operation_name` executes: the only one of an unnamed request to
/// a single-operation document, or the one named in a multi-operation document. Anything else
/// (async-graphql's "operation name required" / "unknown operation" cases) is `None`: such
/// requests are always validated.
fn selected_operation<'a>(
    doc: &'a ExecutableDocument,
    operation_name: Option<&str>,
) -> Option<&'a OperationDefinition> {
    match (&doc.operations, operation_name) {
        (DocumentOperations::Single(operation), None) => Some(&operation.node),
        (DocumentOperations::Multiple(operations), Some(name)) => operations.get(name).map(|op| &op.node),
        _ => None,
    }
}

/// Whether validation results of this schema may be reused: no field computes its complexity from
/// its arguments (complexity is otherwise a function of the document alone).
pub fn validation_reusable(registry: &Registry) -> bool {
    registry.types.values().all(|ty| match ty {
        MetaType::Object { fields, .. } | MetaType::Interface { fields, .. } => {
            fields.values().all(|field| field.compute_complexity.is_none())
        }
        _ => true,
    })
}

/// Whether every variable `variables` gives to `operation` is valid for its declared type by the
/// rules of async-graphql's `ArgumentsOfCorrectType` (`is_valid_input_value`). `false` means
/// "not sure", never "invalid": the caller then validates in full. A variable the request does
/// not give is not checked, as that rule checks no argument that uses a missing variable.
pub fn variables_surely_valid(registry: &Registry, operation: &OperationDefinition, variables: &Variables) -> bool {
    operation.variable_definitions.iter().all(|definition| {
        let definition = &definition.node;
        variables.get(&definition.name.node).is_none_or(|value| fits_type(registry, &definition.var_type.node, value))
    })
}

/// A value against a variable's declared type (the document's `Type`).
fn fits_type(registry: &Registry, ty: &Type, value: &ConstValue) -> bool {
    if matches!(value, ConstValue::Null) {
        return ty.nullable;
    }
    match &ty.base {
        BaseType::Named(name) => fits_named(registry, name, value),
        BaseType::List(item) => match value {
            ConstValue::List(items) => items.iter().all(|v| fits_type(registry, item, v)),
            // Input coercion: a single value where a list is expected is a list of one.
            single => fits_type(registry, item, single),
        },
    }
}

/// A value against an input field's type, as the registry spells it (`Float!`, `[String!]`).
fn fits_meta(registry: &Registry, ty: &str, value: &ConstValue) -> bool {
    match MetaTypeName::create(ty) {
        MetaTypeName::NonNull(inner) => !matches!(value, ConstValue::Null) && fits_meta(registry, inner, value),
        MetaTypeName::List(item) => match value {
            ConstValue::List(items) => items.iter().all(|v| fits_meta(registry, item, v)),
            ConstValue::Null => true,
            single => fits_meta(registry, item, single),
        },
        MetaTypeName::Named(name) => matches!(value, ConstValue::Null) || fits_named(registry, name, value),
    }
}

/// A non-null value against a named input type.
fn fits_named(registry: &Registry, name: &str, value: &ConstValue) -> bool {
    match registry.types.get(name) {
        Some(MetaType::Scalar { is_valid, .. }) => is_valid.as_ref().is_none_or(|is_valid| is_valid(value)),
        Some(MetaType::Enum { enum_values, .. }) => match value {
            ConstValue::Enum(v) => enum_values.contains_key(v.as_str()),
            ConstValue::String(v) => enum_values.contains_key(v.as_str()),
            _ => false,
        },
        Some(MetaType::InputObject { input_fields, oneof: false, .. }) => match value {
            ConstValue::Object(given) => {
                given.keys().all(|key| input_fields.contains_key(key.as_str()))
                    && input_fields.values().all(|field| match given.get(field.name.as_str()) {
                        Some(v) => fits_meta(registry, &field.ty, v),
                        None => !MetaTypeName::create(&field.ty).is_non_null() || field.default_value.is_some(),
                    })
            }
            _ => false,
        },
        // Oneof inputs, unknown types: not sure.
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use async_graphql::parser::parse_query;
    use async_graphql::{OutputType, SubscriptionType};
    use serde_json::json;

    use super::*;
    use crate::graphql::{mutation, query, subscription};

    /// The service's registry, as `build_schema` registers it.
    fn registry() -> Registry {
        let mut registry = Registry::default();
        <query::QueryRoot as OutputType>::create_type_info(&mut registry);
        <mutation::MutationRoot as OutputType>::create_type_info(&mut registry);
        <subscription::SubscriptionRoot as SubscriptionType>::create_type_info(&mut registry);
        registry
    }

    fn surely_valid(registry: &Registry, doc: &str, variables: serde_json::Value) -> bool {
        let doc = parse_query(doc).expect("parses");
        let operation = selected_operation(&doc, None).expect("one operation");
        variables_surely_valid(registry, operation, &Variables::from_json(variables))
    }

    const PREDICT: &str = "query($i: HouseInput!) { predictPrice(input: $i) { id } }";

    #[test]
    fn the_service_schema_allows_reusing_validation() {
        // Adding a field with `complexity = "…"` computed from its arguments fails this test: the
        // complexity limit would then depend on the variables, and validation must run every time.
        assert!(validation_reusable(&registry()));
    }

    #[test]
    fn valid_variables_are_vouched_for() {
        let r = registry();
        assert!(surely_valid(&r, PREDICT, json!({"i": {"squareFeet": 1500, "bedrooms": 3, "bathrooms": 2}})));
        assert!(surely_valid(
            &r,
            PREDICT,
            json!({"i": {"squareFeet": 1500.5, "bedrooms": 3, "bathrooms": 2.5, "neighborhood": "North_Ames", "centralAir": true, "lotArea": null}})
        ));
        // Out of the model's range but of the right type: validation passes, the use case refuses it.
        assert!(surely_valid(&r, PREDICT, json!({"i": {"squareFeet": -1, "bedrooms": 99, "bathrooms": 2}})));
        let batch = "query($b: [HouseInput!]!) { predictPrices(inputs: $b) { index } }";
        assert!(surely_valid(&r, batch, json!({"b": [{"squareFeet": 1, "bedrooms": 1, "bathrooms": 1}]})));
        // A single value where a list is expected is a list of one.
        assert!(surely_valid(&r, batch, json!({"b": {"squareFeet": 1, "bedrooms": 1, "bathrooms": 1}})));
        // A variable the request does not give is not checked here (execution reports it).
        assert!(surely_valid(&r, PREDICT, json!({})));
    }

    #[test]
    fn anything_async_graphql_would_refuse_is_not_vouched_for() {
        let r = registry();
        let cases = [
            json!({"i": null}),
            json!({"i": 5}),
            json!({"i": {"squareFeet": "big", "bedrooms": 3, "bathrooms": 2}}),
            json!({"i": {"squareFeet": 1500, "bedrooms": 2.5, "bathrooms": 2}}),
            json!({"i": {"squareFeet": 1500, "bedrooms": 3}}),
            json!({"i": {"squareFeet": 1500, "bedrooms": 3, "bathrooms": null}}),
            json!({"i": {"squareFeet": 1500, "bedrooms": 3, "bathrooms": 2, "pool": true}}),
            json!({"i": {"squareFeet": 1500, "bedrooms": 3, "bathrooms": 2, "centralAir": "yes"}}),
            json!({"i": [{"squareFeet": 1500, "bedrooms": 3, "bathrooms": 2}]}),
        ];
        for variables in cases {
            assert!(!surely_valid(&r, PREDICT, variables.clone()), "vouched for {variables}");
        }
        let batch = "query($b: [HouseInput!]!) { predictPrices(inputs: $b) { index } }";
        assert!(!surely_valid(&r, batch, json!({"b": [{"squareFeet": 1, "bedrooms": 1, "bathrooms": 1}, null]})));
        assert!(!surely_valid(&r, batch, json!({"b": null})));
    }

    #[test]
    fn only_the_selected_operation_is_remembered() {
        let single = parse_query(PREDICT).expect("parses");
        let cache = DocumentCache::default();
        let cached = cache.put(PREDICT, &single).expect("short enough");
        let result =
            ValidationResult { cache_control: async_graphql::CacheControl::default(), complexity: 2, depth: 2 };
        cached.remember_validated(Some("Other"), result);
        assert!(cached.validated(Some("Other")).is_none(), "a name that selects nothing is not stored");
        cached.remember_validated(None, result);
        assert_eq!(cached.validated(None).map(|r| r.complexity), Some(2));

        let two = "query A { model { name } } query B { model { version } }";
        let cached = cache.put(two, &parse_query(two).expect("parses")).expect("short enough");
        cached.remember_validated(None, result);
        assert!(cached.validated(None).is_none(), "no operation name selects nothing here");
        cached.remember_validated(Some("B"), result);
        assert!(cached.validated(Some("B")).is_some() && cached.validated(Some("A")).is_none());
    }
}
