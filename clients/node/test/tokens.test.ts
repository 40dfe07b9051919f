// Tokens against a live pdv serve, as a payment service uses them.

import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, describe, test } from "node:test";
import { inspect } from "node:util";

import { Client, Code, InvalidArgumentError, PermissionDeniedError, UnauthenticatedError } from "../src";
import { addr, client, subject } from "./live";

const CARD = "4111111111111111";

describe("tokens", () => {
  const payment = client("payment");
  const shipping = client("shipping");
  const support = client("support");
  after(() => {
    payment.close();
    shipping.close();
    support.close();
  });

  test("the payment caller tokenizes a card and reads it back for payment", async () => {
    const user = subject("pay");
    const [card, holder] = await payment.tokenize(user, [
      { category: "card_number", value: CARD, cardToken: true },
      { category: "card_holder", value: "ANN LEE" },
    ]);
    assert.ok(card && holder);
    assert.equal(card.category, "card_number");
    assert.match(card.token, /^[0-9]{12}1111$/);
    assert.notEqual(card.token, CARD);
    assert.match(holder.token, /^tok_/);

    const results = await payment.detokenize([card.token, holder.token], "payment", { justification: "order 1234" });
    assert.deepEqual(
      results.map((r) => [r.token, r.category, r.value, r.ok]),
      [
        [card.token, "card_number", CARD, true],
        [holder.token, "card_holder", "ANN LEE", true],
      ],
    );
    assert.equal(await payment.detokenizeOne(card.token, "payment"), CARD);
    // A value never reaches console.log.
    assert.doesNotMatch(inspect(results), new RegExp(CARD));

    // Masked view for support staff.
    assert.equal(await support.detokenizeOne(card.token, "customer_support"), "************1111");
  });

  test("a retried tokenize with the same request id returns the first answer", async () => {
    const user = subject("idem");
    const requestId = randomUUID(); // of this run: a reused server remembers ids for 24 hours
    const fields = [{ category: "email", value: "ann@example.com" }];
    const first = await payment.tokenize(user, fields, { requestId });
    const again = await payment.tokenize(user, fields, { requestId });
    assert.deepEqual(again, first);
  });

  test("a refused token comes back with its reason decoded, and a refused purpose throws", async () => {
    const [card] = await payment.tokenize(subject("refused"), [{ category: "card_number", value: CARD }]);
    assert.ok(card);
    const [refused] = await shipping.detokenize([card.token], "product_shipping");
    assert.ok(refused);
    assert.equal(refused.ok, false);
    assert.equal(refused.value, undefined);
    assert.ok(refused.error instanceof PermissionDeniedError);
    assert.equal(refused.error.code, Code.PERMISSION_DENIED);
    assert.equal(refused.error.reason, "TOKEN_REFUSED");

    await assert.rejects(shipping.detokenizeOne(card.token, "product_shipping"), (err: unknown) => {
      assert.ok(err instanceof PermissionDeniedError);
      assert.equal(err.reason, "TOKEN_REFUSED");
      return true;
    });
    // The whole call fails for a purpose the caller may not claim.
    await assert.rejects(shipping.detokenize([card.token], "payment"), (err: unknown) => {
      assert.ok(err instanceof PermissionDeniedError);
      assert.equal(err.codeName, "PERMISSION_DENIED");
      assert.notEqual(err.reason, "");
      assert.doesNotMatch(err.message, new RegExp(CARD));
      return true;
    });
  });

  test("bad input is INVALID_ARGUMENT with a BadRequest field violation per broken rule", async () => {
    await assert.rejects(
      payment.tokenize(subject("bad"), [
        { category: "card_number", value: "4111111111111112" },
        { category: "email", value: "not an email" },
      ]),
      (err: unknown) => {
        assert.ok(err instanceof InvalidArgumentError);
        assert.equal(err.code, Code.INVALID_ARGUMENT);
        const fields = err.violations.map((v) => v.field);
        assert.ok(fields.includes("fields[0].value"), JSON.stringify(err.violations));
        assert.ok(fields.includes("fields[1].value"), JSON.stringify(err.violations));
        const luhn = err.violations.find((v) => v.field === "fields[0].value");
        assert.equal(luhn?.rule, "card_number.luhn");
        assert.doesNotMatch(err.message, /4111111111111112/);
        return true;
      },
    );
  });

  test("a wrong API key is UNAUTHENTICATED, never retried", async () => {
    const stranger = new Client(addr(), { apiKey: "pdv_nobody_nothing" });
    try {
      await assert.rejects(stranger.tokenize(subject("anon"), [{ category: "name", value: "X" }]), UnauthenticatedError);
    } finally {
      stranger.close();
    }
  });
});
