// Retries and error details against a stub TokenService in this process (grpc-js's server):
// what a live server cannot be made to do on demand, UNAVAILABLE with RetryInfo, a quota.

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import { Metadata, Server, ServerCredentials, ServerUnaryCall, sendUnaryData, status } from "@grpc/grpc-js";

import { Client, Code, ResourceExhaustedError, UnavailableError } from "../src";
import { Any } from "../src/gen/google/protobuf/any";
import { ErrorInfo, QuotaFailure, RetryInfo } from "../src/gen/google/rpc/error_details";
import { Status } from "../src/gen/google/rpc/status";
import {
  DetokenizeRequest,
  DetokenizeResponse,
  TokenServiceService,
  TokenizeRequest,
  TokenizeResponse,
} from "../src/gen/pdvault/v1/token_service";

function any(typeName: string, value: Uint8Array): Any {
  return { typeUrl: `type.googleapis.com/${typeName}`, value: Buffer.from(value) };
}

/** A failure as pdvault sends one: the code, and a google.rpc.Status in the trailers. */
function richError(code: number, message: string, details: Any[]): { code: number; details: string; metadata: Metadata } {
  const metadata = new Metadata();
  metadata.set("grpc-status-details-bin", Buffer.from(Status.encode({ code, message, details }).finish()));
  return { code, details: message, metadata };
}

function unavailable(retryDelaySeconds: number): ReturnType<typeof richError> {
  return richError(Code.UNAVAILABLE, "the key service is unreachable", [
    any("google.rpc.ErrorInfo", ErrorInfo.encode({ reason: "KMS_UNAVAILABLE", domain: "pdvault.dev", metadata: {} }).finish()),
    any("google.rpc.RetryInfo", RetryInfo.encode({ retryDelay: { seconds: retryDelaySeconds, nanos: 0 } }).finish()),
  ]);
}

describe("retries", () => {
  const server = new Server();
  let port = 0;
  // What the stub saw, and what it will answer next.
  const seen: { requestId: string; authorization: string }[] = [];
  let failures = 0;
  let delaySeconds = 0;

  before(async () => {
    server.addService(TokenServiceService, {
      tokenize(call: ServerUnaryCall<TokenizeRequest, TokenizeResponse>, done: sendUnaryData<TokenizeResponse>) {
        seen.push({
          requestId: call.request.requestId,
          authorization: String(call.metadata.get("authorization")[0] ?? ""),
        });
        if (failures > 0) {
          failures--;
          done(unavailable(delaySeconds));
          return;
        }
        done(null, { results: call.request.fields.map((f, i) => ({ token: `tok_${i}`, category: f.category })) });
      },
      detokenize(_call: ServerUnaryCall<DetokenizeRequest, DetokenizeResponse>, done: sendUnaryData<DetokenizeResponse>) {
        done(
          richError(Code.RESOURCE_EXHAUSTED, "too many detokenize calls", [
            any("google.rpc.ErrorInfo", ErrorInfo.encode({ reason: "RATE_LIMITED", domain: "pdvault.dev", metadata: { rule: "calls" } }).finish()),
            any("google.rpc.QuotaFailure", QuotaFailure.encode({ violations: [{ subject: "caller:payment", description: "100 calls a second", apiService: "", quotaMetric: "", quotaId: "", quotaDimensions: {}, quotaValue: 0 }] }).finish()),
            any("google.rpc.RetryInfo", RetryInfo.encode({ retryDelay: { seconds: 1, nanos: 500_000_000 } }).finish()),
          ]),
        );
      },
    });
    port = await new Promise<number>((resolve, reject) =>
      server.bindAsync("127.0.0.1:0", ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))),
    );
  });
  after(() => server.forceShutdown());

  function stubClient(pauses: number[], timeoutMs = 60_000): Client {
    return new Client(`127.0.0.1:${port}`, {
      apiKey: "pdv_test_key",
      timeoutMs,
      sleep: async (ms) => {
        pauses.push(ms);
      },
    });
  }

  test("UNAVAILABLE is retried with the same request id, at least the RetryInfo delay apart", async () => {
    seen.length = 0;
    failures = 2;
    delaySeconds = 1;
    const pauses: number[] = [];
    const vault = stubClient(pauses);
    try {
      const [result] = await vault.tokenize("user-1", [{ category: "name", value: "Ann" }]);
      assert.equal(result?.token, "tok_0");
    } finally {
      vault.close();
    }
    assert.equal(seen.length, 3);
    const ids = new Set(seen.map((s) => s.requestId));
    assert.equal(ids.size, 1);
    assert.match([...ids][0] ?? "", /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    assert.deepEqual(
      seen.map((s) => s.authorization),
      ["Bearer pdv_test_key", "Bearer pdv_test_key", "Bearer pdv_test_key"],
    );
    assert.equal(pauses.length, 2);
    assert.ok(pauses.every((p) => p >= 1000), String(pauses));
  });

  test("the attempts run out: the last UNAVAILABLE is thrown with its details", async () => {
    seen.length = 0;
    failures = 10;
    delaySeconds = 0;
    const pauses: number[] = [];
    const vault = stubClient(pauses);
    try {
      await assert.rejects(vault.tokenize("user-1", [{ category: "name", value: "Ann" }], { requestId: "5d1f4c36-4a49-4e5e-8d87-3f1c9a2f0b11" }), (err: unknown) => {
        assert.ok(err instanceof UnavailableError);
        assert.equal(err.reason, "KMS_UNAVAILABLE");
        assert.equal(err.retryDelayMs, 0);
        return true;
      });
    } finally {
      vault.close();
    }
    assert.equal(seen.length, 4); // the default policy's attempts
    assert.ok(seen.every((s) => s.requestId === "5d1f4c36-4a49-4e5e-8d87-3f1c9a2f0b11"));
    assert.equal(pauses.length, 3);
    assert.ok(pauses.every((p, i) => p >= 0 && p <= 100 * 2 ** i), String(pauses)); // full jitter
  });

  test("no retry when the server's delay would pass the deadline", async () => {
    seen.length = 0;
    failures = 10;
    delaySeconds = 30;
    const pauses: number[] = [];
    const vault = stubClient(pauses, 5_000);
    try {
      await assert.rejects(vault.tokenize("user-1", [{ category: "name", value: "Ann" }]), UnavailableError);
    } finally {
      vault.close();
    }
    assert.equal(seen.length, 1);
    assert.deepEqual(pauses, []);
  });

  test("RESOURCE_EXHAUSTED is not retried; its QuotaFailure and RetryInfo are decoded", async () => {
    const pauses: number[] = [];
    const vault = stubClient(pauses);
    try {
      await assert.rejects(vault.detokenize(["tok_0"], "payment"), (err: unknown) => {
        assert.ok(err instanceof ResourceExhaustedError);
        assert.equal(err.code, status.RESOURCE_EXHAUSTED);
        assert.equal(err.reason, "RATE_LIMITED");
        assert.deepEqual(err.metadata, { rule: "calls" });
        assert.deepEqual(err.quotaViolations, [{ subject: "caller:payment", description: "100 calls a second" }]);
        assert.equal(err.retryDelayMs, 1500);
        return true;
      });
    } finally {
      vault.close();
    }
    assert.deepEqual(pauses, []);
  });

  test("a server that is not there is UNAVAILABLE within the deadline", async () => {
    server.forceShutdown();
    const pauses: number[] = [];
    const vault = stubClient(pauses, 2_000);
    try {
      await assert.rejects(vault.tokenize("user-1", [{ category: "name", value: "Ann" }]), UnavailableError);
    } finally {
      vault.close();
    }
  });

  test("an address that is not HOST:PORT is refused before any connection", () => {
    assert.throws(() => new Client("http://127.0.0.1:50051"), /no scheme/);
    assert.throws(() => new Client("127.0.0.1"), /HOST:PORT/);
  });
});
