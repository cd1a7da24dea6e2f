// Validates docs/asyncapi.yaml (path as the argument) with the official AsyncAPI parser:
// the AsyncAPI 3.0 schema, its semantic rules, and every $ref resolved (the payload's
// event.schema.json included). Prints each diagnostic; exits 1 on any error.
const { Parser, fromFile } = require("@asyncapi/parser");
const path = require("node:path");

(async () => {
  const file = path.resolve(process.argv[2]);
  const { document, diagnostics } = await fromFile(new Parser(), file).parse();
  for (const d of diagnostics) {
    console.log(`severity ${d.severity} ${d.code} ${JSON.stringify(d.path)}: ${d.message}`);
  }
  const errors = diagnostics.filter((d) => d.severity === 0);
  if (!document || errors.length > 0) {
    console.log(`INVALID: ${errors.length} error(s)`);
    process.exit(1);
  }
  const messages = document.allMessages();
  const channels = document.allChannels().length;
  console.log(`valid AsyncAPI ${document.version()}: ${channels} channels, ${messages.length} messages`);
  // The payload's $ref was followed: the resolved schema's required attributes.
  for (const m of messages) {
    console.log(`message ${m.id()} payload requires ${(m.payload().required() || []).join(",")}`);
  }
})().catch((e) => {
  console.log(`INVALID: ${e.stack || e}`);
  process.exit(1);
});
