// A payment service on pdvault: store a card as tokens at checkout, read it back for a charge,
// and handle a refusal. Run: PDV_ADDR=127.0.0.1:50051 PDV_API_KEY=pdv_... node dist/examples/payment.js

import { Client, InvalidArgumentError, PermissionDeniedError } from "@pdvault/client";

/** At checkout: the card becomes tokens; only the tokens go into the orders database. */
export async function storeCard(
  vault: Client,
  userId: string,
  card: { number: string; holder: string; expiry: string },
): Promise<{ cardToken: string; holderToken: string; expiryToken: string }> {
  const [number, holder, expiry] = await vault.tokenize(userId, [
    // A card-shaped token (16 digits, Luhn-valid, same last four) fits a legacy CHAR(16) column.
    { category: "card_number", value: card.number, cardToken: true },
    { category: "card_holder", value: card.holder },
    { category: "card_expiry", value: card.expiry },
  ]);
  if (!number || !holder || !expiry) throw new Error("pdvault answered fewer tokens than fields");
  return { cardToken: number.token, holderToken: holder.token, expiryToken: expiry.token };
}

export type Charge = { ok: true; last4: string } | { ok: false; reason: string };

/** At charge time: the card for the `payment` purpose, audited with the order id. */
export async function charge(vault: Client, orderId: string, cardToken: string): Promise<Charge> {
  try {
    const number = String(await vault.detokenizeOne(cardToken, "payment", { justification: `order ${orderId}` }));
    // ... hand `number` to the card processor here; never log it.
    return { ok: true, last4: number.slice(-4) };
  } catch (err) {
    if (err instanceof PermissionDeniedError) {
      // TOKEN_REFUSED (unknown, or not readable for payment: pdvault never says which),
      // SUBJECT_STOPPED, CONSENT_WITHDRAWN ...: a business outcome, not an outage.
      return { ok: false, reason: err.reason };
    }
    // UnavailableError (after the client's retries), DeadlineExceededError ...: try later.
    throw err;
  }
}

async function main(): Promise<void> {
  const vault = new Client(process.env.PDV_ADDR ?? "127.0.0.1:50051", {
    apiKey: process.env.PDV_API_KEY,
    timeoutMs: 3000,
  });
  try {
    const tokens = await storeCard(vault, "user-42", { number: "4111 1111 1111 1111", holder: "ANN LEE", expiry: "12/29" });
    console.log("stored", tokens.cardToken);
    console.log(await charge(vault, "A-1001", tokens.cardToken)); // { ok: true, last4: '1111' }
    console.log(await charge(vault, "A-1002", "tok_aaaaaaaaaaaaaaaaaaaaaaaaaa")); // { ok: false, reason: 'TOKEN_REFUSED' }
    await storeCard(vault, "user-42", { number: "4111 1111 1111 1112", holder: "ANN LEE", expiry: "13/29" });
  } catch (err) {
    if (!(err instanceof InvalidArgumentError)) throw err;
    // One violation per broken rule, never the value: fields[0].value card_number.luhn ...
    for (const v of err.violations) console.log("refused:", v.field, v.rule);
  } finally {
    vault.close();
  }
}

if (require.main === module) {
  main().catch((err: unknown) => {
    console.error(err instanceof Error ? err.message : err);
    process.exit(1);
  });
}
