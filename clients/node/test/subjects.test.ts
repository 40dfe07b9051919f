// The subject lifecycle through the operator's client, against the live server: what a payment
// service then sees for the subject's tokens.

import assert from "node:assert/strict";
import { after, describe, test } from "node:test";

import { NotFoundError, SubjectState } from "../src";
import { client, subject } from "./live";

describe("subjects", () => {
  const payment = client("payment");
  const ops = client("ops");
  after(() => {
    payment.close();
    ops.close();
  });

  test("stop, resume, export and shred, and the refusals a reader gets meanwhile", async () => {
    const user = subject("life");
    const [card] = await payment.tokenize(user, [{ category: "card_number", value: "4111111111111111" }]);
    assert.ok(card);
    const admin = ops.subjects();

    const got = await admin.get(user);
    assert.equal(got.subject?.state, SubjectState.SUBJECT_STATE_ACTIVE);

    await admin.stop(user);
    const [stopped] = await payment.detokenize([card.token], "payment");
    assert.equal(stopped?.error?.reason, "SUBJECT_STOPPED");

    await admin.resume(user);
    assert.equal(await payment.detokenizeOne(card.token, "payment"), "4111111111111111");

    const exported = await admin.export(user);
    assert.deepEqual(
      exported.values.map((v) => v.token),
      [card.token],
    );
    assert.ok(exported.accessHistory.length > 0);

    const shredded = await admin.shred(user);
    assert.ok(shredded.receipt?.receiptId);
    assert.equal((await admin.shred(user)).receipt?.receiptId, shredded.receipt?.receiptId); // idempotent
    const [gone] = await payment.detokenize([card.token], "payment");
    assert.ok(gone?.error instanceof NotFoundError);
    assert.equal(gone.error.reason, "SUBJECT_DELETED");
 
    // The subject's own deletion flow says so (audited; never held by dual control).
    const other = subject("self");
    await payment.tokenize(other, [{ category: "email", value: "ann@example.com" }]);
    assert.ok((await admin.shred(other, { bySubject: true })).receipt?.receiptId);

    // Dual control is off in the default policy: nothing waits for a second operator.
    assert.deepEqual(
      (await ops.approvals().list()).filter((a) => a.parameters["subject"] === user),
      [],
    );
  });
});
