// TLS and mTLS options against a stub TokenService served over TLS in this process, with a CA,
// a server certificate and a client certificate made here by openssl (skipped without it).

import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";

import { Server, ServerCredentials, ServerUnaryCall, sendUnaryData } from "@grpc/grpc-js";

import { Client, UnavailableError } from "../src";
import { TokenServiceService, TokenizeRequest, TokenizeResponse } from "../src/gen/pdvault/v1/token_service";

function hasOpenssl(): boolean {
  try {
    execFileSync("openssl", ["version"], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
}

const SERVER_NAME = "pdvault.test";

describe("tls", { skip: hasOpenssl() ? false : "openssl is not installed" }, () => {
  const dir = mkdtempSync(join(tmpdir(), "pdvault-node-tls-"));
  const file = (name: string): Buffer => readFileSync(join(dir, name));
  const server = new Server();
  let port = 0;
  let calls = 0;

  before(async () => {
    const openssl = (...args: string[]): void => {
      execFileSync("openssl", args, { cwd: dir, stdio: "ignore" });
    };
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "1",
      "-subj", "/CN=test CA", "-keyout", "ca.key", "-out", "ca.pem");
    const issue = (name: string, cn: string, ext: string): void => {
      openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-subj", `/CN=${cn}`,
        "-keyout", `${name}.key`, "-out", `${name}.csr`);
      writeFileSync(join(dir, `${name}.ext`), ext);
      openssl("x509", "-req", "-in", `${name}.csr`, "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
        "-days", "1", "-extfile", `${name}.ext`, "-out", `${name}.pem`);
    };
    issue("server", SERVER_NAME, `subjectAltName=DNS:${SERVER_NAME}\nextendedKeyUsage=serverAuth\n`);
    issue("client", "payment", "subjectAltName=URI:spiffe://pdvault.test/payment\nextendedKeyUsage=clientAuth\n");

    server.addService(TokenServiceService, {
      tokenize(call: ServerUnaryCall<TokenizeRequest, TokenizeResponse>, done: sendUnaryData<TokenizeResponse>) {
        calls++;
        done(null, { results: call.request.fields.map((f) => ({ token: "tok_tls", category: f.category })) });
      },
      detokenize() {
        throw new Error("not used");
      },
    });
    const credentials = ServerCredentials.createSsl(
      file("ca.pem"),
      [{ cert_chain: file("server.pem"), private_key: file("server.key") }],
      true, // mTLS: a client certificate signed by the CA is required
    );
    port = await new Promise<number>((resolve, reject) =>
      server.bindAsync("127.0.0.1:0", credentials, (err, p) => (err ? reject(err) : resolve(p))),
    );
  });
  after(() => {
    server.forceShutdown();
    rmSync(dir, { recursive: true, force: true });
  });

  const field = [{ category: "name", value: "Ann" }];

  test("with the CA, the server's name and a client certificate, a call goes through", async () => {
    const vault = new Client(`127.0.0.1:${port}`, {
      tls: { ca: file("ca.pem"), serverName: SERVER_NAME, cert: file("client.pem"), key: file("client.key").toString() },
    });
    try {
      const [result] = await vault.tokenize("user-1", field);
      assert.equal(result?.token, "tok_tls");
    } finally {
      vault.close();
    }
  });

  test("without a client certificate, or with the wrong CA, the handshake fails", async () => {
    const before = calls;
    const noCert = new Client(`127.0.0.1:${port}`, { tls: { ca: file("ca.pem"), serverName: SERVER_NAME }, retry: { attempts: 1 } });
    const wrongCa = new Client(`127.0.0.1:${port}`, {
      tls: { ca: file("server.pem"), serverName: SERVER_NAME, cert: file("client.pem"), key: file("client.key") },
      retry: { attempts: 1 },
    });
    try {
      await assert.rejects(noCert.tokenize("user-1", field), UnavailableError);
      await assert.rejects(wrongCa.tokenize("user-1", field), UnavailableError);
    } finally {
      noCert.close();
      wrongCa.close();
    }
    assert.equal(calls, before);
  });

  test("a client certificate without its key is refused at once", () => {
    assert.throws(() => new Client(`127.0.0.1:${port}`, { tls: { cert: file("client.pem") } }), /go together/);
  });
});
