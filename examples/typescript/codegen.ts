// graphql-codegen configuration: TypeScript types for the schema and for every operation in
// src/operations.graphql, plus a TypedDocumentNode per operation. graphql-request (and
// graphql-ws) infer the variables and the result type from a TypedDocumentNode, so a wrong
// variable or a field the query did not select is a compile error.
//
// The schema is the committed SDL at the repository root (`make schema` writes it and a test
// checks it is current): codegen needs no running server.
import type { CodegenConfig } from "@graphql-codegen/cli";

const config: CodegenConfig = {
  schema: "../../schema.graphql",
  documents: ["src/operations.graphql"],
  // Fail if the documents glob matches nothing (codegen always fails on a document that does
  // not validate against the schema).
  ignoreNoDocuments: false,
  generates: {
    "src/generated/graphql.ts": {
      plugins: ["typescript", "typescript-operations", "typed-document-node"],
      config: {
        // Custom scalars: DateTime is an RFC 3339 string on the wire; JSON is any JSON.
        scalars: { DateTime: "string", JSON: "unknown" },
        // Types only where TypeScript needs them (no runtime enum objects).
        enumsAsTypes: true,
        useTypeImports: true,
        // Nullable fields are `T | null` (what the server sends), not optional.
        avoidOptionals: { field: true, inputValue: false, object: true, defaultValue: false },
        strictScalars: true,
      },
    },
  },
};

export default config;
