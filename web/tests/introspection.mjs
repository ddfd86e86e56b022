// Checks that the schema a client builds from the server's answer to the standard introspection
// query is the committed schema.graphql, as graphql-js (GraphiQL, codegen, Apollo) sees both.
// Usage: node web/tests/introspection.mjs <introspection-result.json> <schema.graphql>
// Prints one JSON line; exit 1 with a line-by-line difference when they differ.
import { readFileSync } from 'node:fs';
import { buildClientSchema, buildSchema, lexicographicSortSchema, printSchema } from 'graphql';

const [resultPath, sdlPath] = process.argv.slice(2);
const result = JSON.parse(readFileSync(resultPath, 'utf8'));
if (result.errors) {
  console.log(JSON.stringify({ ok: false, error: 'the introspection answer has errors', errors: result.errors }));
  process.exit(1);
}
// Sorted and printed by the same printer, so only meaning can differ, not layout or order.
const print = (schema) => printSchema(lexicographicSortSchema(schema));
const fromServer = print(buildClientSchema(result.data));
const committed = print(buildSchema(readFileSync(sdlPath, 'utf8')));
if (fromServer === committed) {
  console.log(JSON.stringify({ ok: true, types: Object.keys(buildClientSchema(result.data).getTypeMap()).length }));
} else {
  const a = fromServer.split('\n');
  const b = committed.split('\n');
  const diff = [];
  for (let i = 0; i < Math.max(a.length, b.length) && diff.length < 20; i++) {
    if (a[i] !== b[i]) diff.push({ line: i + 1, server: a[i], committed: b[i] });
  }
  console.log(JSON.stringify({ ok: false, error: 'the introspected schema differs from schema.graphql', diff }));
  process.exit(1);
}
