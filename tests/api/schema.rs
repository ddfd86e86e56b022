use house_price_api::build_schema;
use house_price_api::config::LimitsConfig;
use serde_json::Value;

#[tokio::test]
async fn schema_graphql_matches_build_schema() {
    let generated = house_price_api::graphql::sdl(&build_schema(&LimitsConfig::default())).await;
    let committed = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/schema.graphql")).unwrap_or_default();
    assert!(
        generated == committed,
        "schema.graphql is out of date with build_schema; regenerate it with `make schema` \
         (cargo run -- schema > schema.graphql) and commit it"
    );
}

#[tokio::test]
async fn every_type_and_field_of_ours_has_a_description() {
    let schema = build_schema(&LimitsConfig::default());
    let response = schema
        .execute("{ __schema { types { name kind description fields { name description } inputFields { name description } enumValues { name description } } } }")
        .await;
    let data = response.data.into_json().unwrap();
    let mut missing = Vec::new();
    for t in data["__schema"]["types"].as_array().unwrap() {
        let name = t["name"].as_str().unwrap();
        // Introspection types and GraphQL's built-in scalars are not ours to describe.
        if name.starts_with("__") || ["String", "Int", "Float", "Boolean", "ID"].contains(&name) {
            continue;
        }
        if t["description"].as_str().is_none_or(str::is_empty) {
            missing.push(name.to_owned());
        }
        for key in ["fields", "inputFields", "enumValues"] {
            for f in t[key].as_array().unwrap_or(&Vec::<Value>::new()) {
                if f["description"].as_str().is_none_or(str::is_empty) {
                    missing.push(format!("{name}.{}", f["name"].as_str().unwrap()));
                }
            }
        }
    }
    assert!(missing.is_empty(), "add /// docs to: {missing:?}");
}

/// Analysts read the documentation in their SQL client: every table, view and table column of ours
/// has a catalog comment (`\d+` in psql). A partitioned table is documented once, on its parent.
#[sqlx::test]
async fn every_table_view_and_column_has_a_catalog_comment(pool: sqlx::PgPool) {
    let missing: Vec<String> = sqlx::query_scalar(
        "select c.relname from pg_class c
          where c.relnamespace = 'public'::regnamespace and c.relkind in ('r', 'p', 'v') and not c.relispartition
            and c.relname <> '_sqlx_migrations' and obj_description(c.oid, 'pg_class') is null
         union all
         select c.relname || '.' || a.attname from pg_class c join pg_attribute a on a.attrelid = c.oid
          where c.relnamespace = 'public'::regnamespace and c.relkind in ('r', 'p') and not c.relispartition
            and c.relname <> '_sqlx_migrations' and a.attnum > 0 and not a.attisdropped and col_description(c.oid, a.attnum) is null
         order by 1",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert!(missing.is_empty(), "add `comment on` statements in a new migration for: {missing:?}");
}

#[sqlx::test]
async fn the_log_column_list_covers_every_column_of_prediction_log(pool: sqlx::PgPool) {
    use house_price_api::log::record::{INSERTED_COLUMNS, OTHER_COLUMNS};
    let table: std::collections::BTreeSet<String> = sqlx::query_scalar(
        "select column_name::text from information_schema.columns where table_name = 'prediction_log'",
    )
    .fetch_all(&pool)
    .await
    .unwrap()
    .into_iter()
    .collect();
    let listed: std::collections::BTreeSet<String> = INSERTED_COLUMNS
        .iter()
        .map(|c| c.name.to_owned())
        .chain(OTHER_COLUMNS.iter().map(|c| (*c).to_owned()))
        .collect();
    assert_eq!(
        table, listed,
        "a column was added to the table or to src/log/record.rs (INSERTED_COLUMNS / OTHER_COLUMNS) but not to both"
    );
}

/// `HouseInput` is generated from the feature catalogue: one field per catalogue line, in order,
/// named, typed, required and described as the line says.
#[tokio::test]
async fn house_input_fields_are_the_feature_catalogue() {
    use house_price_api::model::catalogue::{CATALOGUE, ValueType};
    let schema = build_schema(&LimitsConfig::default());
    let response = schema
        .execute(
            r#"{ __type(name: "HouseInput") { inputFields { name description type { kind name ofType { name } } } } }"#,
        )
        .await;
    let data = response.data.into_json().unwrap();
    let fields = data["__type"]["inputFields"].as_array().unwrap();
    let names: Vec<&str> = fields.iter().map(|f| f["name"].as_str().unwrap()).collect();
    let catalogue: Vec<&str> = CATALOGUE.iter().map(|d| d.name).collect();
    assert_eq!(names, catalogue);
    for (field, def) in fields.iter().zip(CATALOGUE) {
        let ty = &field["type"];
        assert_eq!(ty["kind"] == "NON_NULL", def.required, "{}", def.name);
        let scalar = if def.required { &ty["ofType"]["name"] } else { &ty["name"] };
        let expected = match def.value {
            ValueType::Float => "Float",
            ValueType::Int => "Int",
            ValueType::Bool => "Boolean",
            ValueType::Label => "String",
        };
        assert_eq!(scalar, expected, "{}", def.name);
        let description = field["description"].as_str().unwrap();
        assert!(description.starts_with(def.description) && description.contains(def.unit), "{description}");
        for column in def.source.columns() {
            assert!(description.contains(column), "{description} names {column}");
        }
        if let Some((min, max)) = def.range {
            assert!(description.contains(&format!("{min} to {max}")), "{description} gives the range");
        }
    }
}
