// Single-thread tokenization rate of npm `tiktoken` (the WASM build of OpenAI's tiktoken) on the SOTU sample, GPT-2
// encoding, encode_ordinary semantics (no special tokens) + one EOT per document, as `prepare` counts.
// usage: node tiktoken_sotu.cjs TIKTOKEN_PACKAGE_DIR SOTU_DATA_DIR
const fs = require("fs"), path = require("path");
const [pkg, data] = process.argv.slice(2);
const { get_encoding } = require(path.join(pkg, "tiktoken.cjs"));
const enc = get_encoding("gpt2");
const texts = fs.readdirSync(data).filter(f => f.endsWith(".json")).sort().map(f => JSON.parse(fs.readFileSync(path.join(data, f), "utf8")).text);
const chars = texts.reduce((a, t) => a + t.length, 0);
let best = Infinity, tokens = 0;
for (let rep = 0; rep < 3; rep++) {
  const t0 = process.hrtime.bigint();
  tokens = 0;
  for (const t of texts) tokens += enc.encode_ordinary(t).length + 1;
  best = Math.min(best, Number(process.hrtime.bigint() - t0) / 1e9);
}
enc.free();
console.log(JSON.stringify({ docs: texts.length, chars, tokens, seconds: best, tokens_per_s: tokens / best }));
