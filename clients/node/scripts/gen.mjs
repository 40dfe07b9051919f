// Regenerate the client's API code (src/gen) from the repository's protos with buf and ts-proto,
// after a .proto changes: `npm run gen`. The generated code is committed, so that neither an
// install nor CI needs a code generator; `npm run gen:check` (run by `npm test`) regenerates into
// a temporary folder and fails when the committed files differ, as scripts/gen_protos.py --check
// does for the Python client.
//
// buf is the repository's own (its root package.json: `npm ci` at the root installs it); the
// template is clients/node/buf.gen.yaml, its input the repository's buf workspace.
import { execFileSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, relative, resolve } from "node:path";

const root = resolve(import.meta.dirname, "..", "..", "..");
const gen = join("clients", "node", "src", "gen");
const buf = join(root, "node_modules", ".bin", "buf");

function generate(output) {
  if (!existsSync(buf)) {
    console.error(`${buf} is missing: run \`npm ci\` in ${root} first`);
    process.exit(2);
  }
  const args = ["generate", "--template", join("clients", "node", "buf.gen.yaml")];
  if (output !== root) args.push("--output", output);
  execFileSync(buf, args, { cwd: root, stdio: "inherit" });
}

function files(dir) {
  if (!existsSync(dir)) return [];
  return readdirSync(dir, { recursive: true })
    .map(String)
    .filter((name) => statSync(join(dir, name)).isFile())
    .sort();
}

if (!process.argv.includes("--check")) {
  rmSync(join(root, gen), { recursive: true, force: true });
  generate(root);
  process.exit(0);
}

const tmp = mkdtempSync(join(tmpdir(), "pdvault-node-gen-"));
try {
  generate(tmp);
  const fresh = join(tmp, gen);
  const committed = join(root, gen);
  const names = new Set([...files(fresh), ...files(committed)]);
  const stale = [...names].filter((name) => {
    const a = join(fresh, name);
    const b = join(committed, name);
    return !existsSync(a) || !existsSync(b) || !readFileSync(a).equals(readFileSync(b));
  });
  if (stale.length > 0) {
    console.error(
      `generated code is stale: ${stale.map((n) => relative(root, join(committed, n))).join(", ")}; ` +
        "run `npm run gen` in clients/node",
    );
    process.exit(1);
  }
} finally {
  rmSync(tmp, { recursive: true, force: true });
}
