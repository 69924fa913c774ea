// Reference token counter for the tests: the model families' own tokenizers, run from Node.
//
// Usage: node reference_tokenizers.mjs DIR, where DIR is what
// `scripts/reference-tokenizers.sh install` filled (the packages are in DIR/node). Reads one
// JSON request a line on stdin, {"tokenizer": "<name>", "texts": ["...", ...]}, and answers
// each with one line on stdout, {"counts": [n, ...]} or {"error": "..."}. Exits at the end of
// stdin.
//
// Tokenizers (each loaded once, on first use):
//   llama2            llama-tokenizer-js (Llama 1/2 SentencePiece): no BOS, with the preceding
//                     space; all text counted as text
//   llama2-specials   the same, for a server that parses <s> and </s> as special tokens: each
//                     counts 1, and the text between them is encoded segment by segment
//   claude2           @anthropic-ai/tokenizer, Anthropic's legacy (Claude 2) tokenizer. Its
//                     countTokens(text) builds the tokenizer anew on every call (about 50 ms);
//                     this does what it does, NFKC then encode with every special token
//                     allowed, on one tokenizer built once.
import { createRequire } from "node:module";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { pathToFileURL } from "node:url";

const dir = process.argv[2] ?? "";
// Resolve the packages from DIR/node, not from this script's folder.
const requireFromDir = createRequire(join(dir, "node", "package.json"));
const load = async (name) => import(pathToFileURL(requireFromDir.resolve(name)).href);

async function llama2() {
  const llama = (await load("llama-tokenizer-js")).default;
  return (text) => llama.encode(text, false, true).length;
}

async function llama2Specials() {
  const llama = await llama2();
  // split with a capture group keeps the separators; empty segments count 0.
  return (text) =>
    text
      .split(/(<s>|<\/s>)/)
      .filter((part) => part !== "")
      .reduce((sum, part) => sum + (part === "<s>" || part === "</s>" ? 1 : llama(part)), 0);
}

async function claude2() {
  const tokenizer = (await load("@anthropic-ai/tokenizer")).getTokenizer();
  return (text) => tokenizer.encode(text.normalize("NFKC"), "all").length;
}

const loaders = { llama2, "llama2-specials": llama2Specials, claude2 };
const loaded = new Map();

async function answer(line) {
  try {
    const { tokenizer: name, texts } = JSON.parse(line);
    if (!Object.hasOwn(loaders, name)) {
      return { error: `unknown tokenizer ${JSON.stringify(name)}; this server has ${Object.keys(loaders)}` };
    }
    if (!Array.isArray(texts) || !texts.every((t) => typeof t === "string")) {
      return { error: "texts must be a list of strings" };
    }
    if (!loaded.has(name)) loaded.set(name, await loaders[name]());
    const count = loaded.get(name);
    return { counts: texts.map(count) };
  } catch (e) {
    // Answer every request; the client reports the error.
    return { error: String(e?.stack ?? e) };
  }
}

// One request at a time, in order: readline's async iterator waits for each answer.
for await (const line of createInterface({ input: process.stdin, crlfDelay: Infinity })) {
  if (line.trim() !== "") process.stdout.write(JSON.stringify(await answer(line)) + "\n");
}
