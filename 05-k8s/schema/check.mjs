// k8s-schema-check: every document of every *.yaml under the given
// directories against the official Kubernetes OpenAPI schema, as packaged
// by kubernetes-models 4.5 (types, required fields, apiVersion/kind).
// The schema allows unknown fields: k8s-validate's own model rejects those.
//
//   node 05-k8s/schema/check.mjs DIR...      (after npm ci in 05-k8s/schema)
// Prints "ok FILE#N Kind" or "error FILE#N Kind: message" per document;
// exit 0 if every document is valid, 1 otherwise, 2 on bad arguments.
import { readFileSync, readdirSync, statSync } from "node:fs";
import { join } from "node:path";
import { parseAllDocuments } from "yaml";

const groups = {
  v1: "kubernetes-models/v1",
  "apps/v1": "kubernetes-models/apps/v1",
  "policy/v1": "kubernetes-models/policy/v1",
};

const dirs = process.argv.slice(2);
if (dirs.length === 0) {
  console.error("usage: check.mjs DIR...");
  process.exit(2);
}
let failed = 0;
for (const dir of dirs) {
  let files;
  try {
    files = readdirSync(dir).filter((f) => /\.ya?ml$/.test(f)).sort();
    if (!statSync(dir).isDirectory() || files.length === 0) throw new Error("no *.yaml");
  } catch (e) {
    console.error(`error: ${dir}: ${e.message}`);
    process.exit(2);
  }
  for (const file of files) {
    const docs = parseAllDocuments(readFileSync(join(dir, file), "utf8"));
    let n = 0;
    for (const doc of docs) {
      const where = `${file}#${++n}`;
      const obj = doc.toJSON();
      const kind = obj?.kind ?? "?";
      try {
        if (doc.errors.length) throw new Error(doc.errors[0].message);
        const path = groups[obj.apiVersion];
        if (!path) throw new Error(`apiVersion '${obj.apiVersion}' is not one this check knows (v1, apps/v1, policy/v1)`);
        const Model = (await import(path))[kind];
        if (!Model) throw new Error(`no kind ${kind} in ${obj.apiVersion}`);
        new Model(obj).validate();
        console.log(`ok ${where} ${kind}`);
      } catch (e) {
        ++failed;
        console.log(`error ${where} ${kind}: ${String(e.message).split("\n").slice(0, 3).join(" ")}`);
      }
    }
  }
}
process.exit(failed === 0 ? 0 : 1);
