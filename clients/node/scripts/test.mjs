// `npm test`: check that the generated code is current (scripts/gen.mjs --check), compile with
// tsc, and run the client's tests (dist/test/*.test.js) with node's test runner against a live
// `pdv serve`: the one at PDV_ADDR, with the demo callers' keys from
// PDV_DATA_DIR/dev-credentials.json, when both are set; else one started here, on a free port
// with a temporary data directory, and stopped at the end.
//
// The server started here is the checkout's: `pdv` from PDV_BIN, else <repo>/.venv/bin/pdv
// (what `make` installs; CI's), else `pdv` on PATH, with PYTHONPATH set to the checkout so that
// a git worktree's code is what runs.
import { execFile, spawn } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { delimiter, join, resolve } from "node:path";

const here = resolve(import.meta.dirname, "..");
const root = resolve(here, "..", "..");

function freePort() {
  return new Promise((ok, fail) => {
    const server = createServer();
    server.on("error", fail);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => ok(port));
    });
  });
}

function pdvBinary() {
  if (process.env.PDV_BIN) return process.env.PDV_BIN;
  const local = join(root, ".venv", "bin", "pdv");
  return existsSync(local) ? local : "pdv";
}

async function startServer() {
  const data = mkdtempSync(join(tmpdir(), "pdvault-node-test-"));
  const addr = `127.0.0.1:${await freePort()}`;
  const env = Object.fromEntries(
    Object.entries(process.env).filter(([k]) => !k.startsWith("PDV_") && !k.startsWith("VAULT_")),
  );
  Object.assign(env, {
    PDV_ADDR: addr,
    PDV_DATA_DIR: data,
    PDV_PROCESSES: "1",
    PDV_SHUTDOWN_PAUSE: "0",
    PYTHONPATH: [root, join(root, "clients", "python")].join(delimiter),
  });
  const proc = spawn(pdvBinary(), ["serve"], { env, stdio: ["ignore", "pipe", "pipe"] });
  let log = "";
  const listening = new Promise((ok, fail) => {
    const timer = setTimeout(() => fail(new Error(`pdv serve did not listen within 60 s:\n${log}`)), 60_000);
    const read = (chunk) => {
      log += chunk;
      if (log.includes("listening on")) {
        clearTimeout(timer);
        ok();
      }
    };
    proc.stdout.on("data", read);
    proc.stderr.on("data", read);
    proc.on("error", (err) => fail(new Error(`could not start ${pdvBinary()}: ${err.message}`)));
    proc.on("exit", (code) => fail(new Error(`pdv serve exited (${code}):\n${log}`)));
  });
  try {
    await listening;
  } catch (err) {
    proc.kill("SIGKILL");
    rmSync(data, { recursive: true, force: true });
    throw err;
  }
  const stop = async () => {
    if (proc.exitCode === null) {
      const exited = new Promise((ok) => proc.once("exit", ok));
      proc.kill("SIGTERM");
      await exited;
    }
    rmSync(data, { recursive: true, force: true });
  };
  return { addr, data, stop, log: () => log };
}

/** Run a step of the build; its output is shown only when it fails. */
function step(name, command, args) {
  return new Promise((ok, fail) => {
    execFile(command, args, { cwd: here }, (err, stdout, stderr) => {
      if (err) fail(new Error(`${name} failed:\n${stdout}${stderr}`));
      else ok();
    });
  });
}

const reuse = Boolean(process.env.PDV_ADDR && process.env.PDV_DATA_DIR);
// The server starts (a few seconds of Python) while the code is checked and compiled.
const starting = reuse ? undefined : startServer();
starting?.catch(() => undefined); // awaited below
rmSync(join(here, "dist"), { recursive: true, force: true }); // no test of an older build runs
try {
  await Promise.all([
    step("npm run gen:check", process.execPath, [join(here, "scripts", "gen.mjs"), "--check"]),
    // No declarations or source maps for a test run: `npm run build` makes those.
    step("tsc", process.execPath, [
      join(here, "node_modules", "typescript", "bin", "tsc"),
      "-p", "tsconfig.json", "--declaration", "false", "--sourceMap", "false",
    ]),
  ]);
} catch (err) {
  console.error(err.message);
  if (starting) await starting.then((s) => s.stop(), () => undefined);
  process.exit(1);
}

let server;
const env = { ...process.env };
if (reuse) {
  const creds = join(process.env.PDV_DATA_DIR, "dev-credentials.json");
  JSON.parse(readFileSync(creds, "utf8")); // fail early, and clearly, without the demo keys
  console.log(`testing against the pdv serve at ${process.env.PDV_ADDR}`);
} else {
  server = await starting;
  env.PDV_ADDR = server.addr;
  env.PDV_DATA_DIR = server.data;
  console.log(`testing against a pdv serve started at ${server.addr}`);
}

const given = process.argv.slice(2);
const tests = given.length
  ? given
  : readdirSync(join(here, "dist", "test")).filter((f) => f.endsWith(".test.js")).map((f) => join("dist", "test", f));
const runner = spawn(process.execPath, ["--test", "--test-reporter=spec", ...tests], { cwd: here, env, stdio: "inherit" });
const code = await new Promise((ok) => runner.on("exit", (c, signal) => ok(c ?? (signal ? 1 : 0))));
if (server) {
  if (code !== 0) console.error(`-- the server's log --\n${server.log()}`);
  await server.stop();
}
process.exit(code);
