// Validates YAML or JSON instances against a JSON Schema with two validators that share no code
// with pipectl: ajv in strict mode, under the draft the schema declares (YAML read by the yaml
// package's YAML 1.2 core schema), and yaml-language-server, the engine of the YAML editor
// extensions, as an editor runs it. Usage: node check.mjs SCHEMA.json [INSTANCE.yaml|.json...]
// Prints one JSON document: {"schema": null or the compile error, "results": {"file": [ajv
// errors]}, "editor": {"file": [yaml-language-server diagnostics]}}.
// The Go tests in schemas/ run it; it is the independent validator, so it shares no code with
// pipectl.
import { readFileSync } from "node:fs";
import Ajv from "ajv";
import Ajv2020 from "ajv/dist/2020.js";
import addFormats from "ajv-formats";
import { parseDocument } from "yaml";
import { pathToFileURL } from "node:url";
import { getLanguageService } from "yaml-language-server";
import { TextDocument } from "vscode-languageserver-textdocument";

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
ajv.addKeyword({ keyword: "patternErrorMessage", schemaType: "string" });

const out = { schema: null, results: {}, editor: {} };
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
if (validate) {
  const editor = getLanguageService({
    schemaRequestService: async (uri) => readFileSync(new URL(uri), "utf8"),
    workspaceContext: { resolveRelativePath: (rel, res) => new URL(rel, res).href },
  });
  editor.configure({ validate: true, yamlVersion: "1.2", schemas: [{ uri: pathToFileURL(schemaPath).href, fileMatch: ["*"] }] });
  for (const file of instances.filter((f) => !f.endsWith(".json"))) {
    const doc = TextDocument.create(pathToFileURL(file).href, "yaml", 1, readFileSync(file, "utf8"));
    const diags = await editor.doValidation(doc, false);
    out.editor[file] = diags.map((d) => `${d.range.start.line + 1}:${d.range.start.character + 1}: ${d.message}`);
  }
}
process.stdout.write(JSON.stringify(out));
