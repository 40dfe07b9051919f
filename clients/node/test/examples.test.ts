// The README's examples (examples/*.ts, which import the package by its name, as a payment or
// KYC team's service would) against the live server.

import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PassThrough, Readable } from "node:stream";
import { after, describe, test } from "node:test";

import { charge, storeCard } from "../examples/payment";
import { showToReviewer, uploadFromRequest, uploadLicence } from "../examples/kyc-upload";
import { client, png, subject } from "./live";

describe("examples", () => {
  const payment = client("payment");
  const kyc = client("kyc");
  const dir = mkdtempSync(join(tmpdir(), "pdvault-node-examples-"));
  after(() => {
    payment.close();
    kyc.close();
    rmSync(dir, { recursive: true, force: true });
  });

  test("the payment service stores a card, charges it, and is told why a charge was refused", async () => {
    const tokens = await storeCard(payment, subject("shop"), {
      number: "4111 1111 1111 1111",
      holder: "ANN LEE",
      expiry: "12/29",
    });
    assert.deepEqual(await charge(payment, "A-1", tokens.cardToken), { ok: true, last4: "1111" });
    assert.deepEqual(await charge(payment, "A-2", "tok_aaaaaaaaaaaaaaaaaaaaaaaaaa"), {
      ok: false,
      reason: "TOKEN_REFUSED",
    });
  });

  test("the KYC flow uploads a file and a request body, and shows the sanitized copy", async () => {
    const content = png(64, 48);
    const path = join(dir, "licence.png");
    writeFileSync(path, content);
    const user = subject("kyc-example");
    const licence = await uploadLicence(kyc, user, path);
    assert.equal(licence.type, "drivers_license");
    const passport = await uploadFromRequest(kyc, user, Readable.from([content.subarray(0, 50), content.subarray(50)]), content.length);
    assert.equal(passport.type, "passport");

    const out = new PassThrough();
    const parts: Buffer[] = [];
    out.on("data", (part: Buffer) => parts.push(part));
    const shown = await showToReviewer(kyc, passport.id, "17", out);
    assert.equal(shown.id, passport.id);
    const sanitized = shown.variants.find((v) => v.variant === "sanitized");
    assert.equal(Buffer.concat(parts).length, sanitized?.size);
  });
});
