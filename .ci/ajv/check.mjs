// Validates YAML or JSON instances against a JSON Schema with ajv in strict mode, under the
// draft the schema declares. Usage: node check.mjs SCHEMA.json [INSTANCE.yaml|.json...]
// YAML is read by the yaml package's YAML 1.2 core schema, as yaml-language-server reads it.
// Prints one JSON document: {"schema": null or the compile error, "results": {"file": [errors]}}.
// The Go tests in schemas/ run it; it is the independent validator, so it shares no code with
// pipectl.
import { readFileSync } from "node:fs";
import Ajv from "ajv";
import Ajv2020 from "ajv/dist/2020.js";
import addFormats from "ajv-formats";
import { parseDocument } from "yaml";

const [schemaPath, ...instances] = process.argv.slice(2);
const schema = JSON.parse(readFileSync(schemaPath, "utf8"));
const draft2020 = schema.$schema === "https://json-schema.org/draft/2020-12/schema";
if (!draft2020 && schema.$schema !== "http://json-schema.org/draft-07/schema#") {
  console.error(`unsupported $schema ${schema.$schema}`);
  process.exit(2);
}
const AjvClass = draft2020 ? Ajv2020 : Ajv;
const ajv = new AjvClass({ strict: true, allErrors: true });
addFormats(ajv);
// The annotation editors read (VS Code, yaml-language-server); declared so strict mode knows it.
ajv.addKeyword({ keyword: "markdownDescription", schemaType: "string" });

const out = { schema: null, results: {} };
let validate;
try {
  validate = ajv.compile(schema);
} catch (e) {
  out.schema = String(e.message || e);
}
if (validate) {
  for (const file of instances) {
    const text = readFileSync(file, "utf8");
    let value;
    if (file.endsWith(".json")) {
      value = JSON.parse(text);
    } else {
      const doc = parseDocument(text, { version: "1.2", schema: "core", uniqueKeys: true });
      if (doc.errors.length > 0) {
        out.results[file] = doc.errors.map((e) => `YAML: ${e.message}`);
        continue;
      }
      try {
        value = doc.toJS({ maxAliasCount: 1000 });
      } catch (e) {
        out.results[file] = [`YAML: ${e.message}`];
        continue;
      }
    }
    const ok = validate(value);
    out.results[file] = ok ? [] : validate.errors.map((e) => `${e.instancePath || "/"} ${e.message} (${e.schemaPath})`);
  }
}
process.stdout.write(JSON.stringify(out));
