// Validate AsyncAPI documents with the official parser (@asyncapi/parser):
//   node validate.cjs FILE...
// Prints every diagnostic; exits 1 when any is an error (severity 0), 2 on bad usage.
"use strict";
const fs = require("fs");
const { Parser } = require("@asyncapi/parser");

async function main(files) {
  if (files.length === 0) {
    console.error("usage: node validate.cjs FILE...");
    return 2;
  }
  const parser = new Parser();
  let failed = false;
  for (const file of files) {
    const { document, diagnostics } = await parser.parse(fs.readFileSync(file, "utf8"));
    const errors = diagnostics.filter((d) => d.severity === 0);
    for (const d of diagnostics) {
      const where = (d.path || []).join("/");
      console.log(`${file}: severity ${d.severity} ${d.code}: ${d.message} at /${where}`);
    }
    if (errors.length > 0 || document === undefined) {
      failed = true;
      console.log(`${file}: INVALID (${errors.length} error(s))`);
    } else {
      console.log(`${file}: valid AsyncAPI ${document.version()}`);
    }
  }
  return failed ? 1 : 0;
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (error) => {
    console.error(error);
    process.exit(1);
  }
);
