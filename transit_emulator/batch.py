"""``batch_input`` for encrypt, decrypt and rewrap: decoding, the first pass, and the status.

``decodeBatchRequestItems`` (path_encrypt.go): a type error fails the whole request with 500;
``batchRequestResponse``: a failed item makes the answer 400 (or 500 for an internal error)
unless ``partial_failure_response_code`` overrides it and one item succeeded.
"""

from __future__ import annotations

from dataclasses import dataclass

from transit_emulator.envelope import Result
from transit_emulator.errors import ERR_CONTEXT_MIX, internal_error, user_error
from transit_emulator.fields import JSON, Base64Error, get_int, get_str, go_b64decode, go_type

_TEXT_FIELDS = ("context", "ciphertext", "plaintext", "nonce", "associated_data", "reference")


@dataclass
class BatchItem:
    plaintext: str = ""
    ciphertext: str = ""
    context: str = ""
    nonce: str = ""
    key_version: int = 0
    associated_data: str = ""
    reference: str = ""


def _unconvertible(expected: str, value: object) -> str:
    return f"expected type '{expected}', got unconvertible type '{go_type(value)}'"


def decode_batch(raw: object, required: str | None) -> list[BatchItem]:
    """``decodeBatchRequestItems``; ``required`` names the field each item must carry."""
    prefix = "failed to parse batch input: "
    if not isinstance(raw, list):
        message = f"source data must be an array or slice, got {go_type(raw)}"
        raise internal_error(prefix + message)
    items: list[BatchItem] = []
    errors: list[str] = []
    for i, entry in enumerate(raw):
        if not isinstance(entry, dict):
            raise internal_error(f"{prefix}[{i}] expected a map, got '{go_type(entry)}'")
        item = BatchItem()
        for name in _TEXT_FIELDS:
            if name not in entry:
                if name == required:
                    what = "to encrypt" if name == "plaintext" else "to decrypt"
                    errors.append(f"'[{i}].{name}' missing {name} {what}")
                continue
            value = entry[name]
            if isinstance(value, str):
                setattr(item, name, value)
            elif value is not None or name == "plaintext":  # only plaintext rejects null
                errors.append(f"'[{i}].{name}' {_unconvertible('string', value)}")
        version = entry.get("key_version")
        if isinstance(version, int) and not isinstance(version, bool):
            item.key_version = version
        elif isinstance(version, float):
            errors.append(
                f"error decoding json.Number into [{i}].key_version: "
                f'strconv.ParseInt: parsing "{version}": invalid syntax'
            )
        elif version is not None:
            errors.append(f"'[{i}].key_version' {_unconvertible('int', version)}")
        items.append(item)
    if errors:
        points = "\n".join(sorted(f"* {e}" for e in errors))
        raise internal_error(f"{prefix}{len(errors)} error(s) decoding:\n\n{points}")
    return items


def single_item(body: JSON, field_name: str, value: str) -> BatchItem:
    """The one item a request without ``batch_input`` stands for."""
    item = BatchItem(
        context=get_str(body, "context")[0],
        nonce=get_str(body, "nonce")[0],
        key_version=get_int(body, "key_version")[0],
        associated_data=get_str(body, "associated_data")[0],
    )
    setattr(item, field_name, value)
    return item


def request_items(body: JSON, field_name: str) -> tuple[list[BatchItem], bool]:
    """The batch items, or one item built from the top-level fields (``batch`` False)."""
    if body.get("batch_input") is not None:
        items = decode_batch(body["batch_input"], field_name)
        if not items:
            raise user_error("missing batch input to process")
        return items, True
    value, given = get_str(body, field_name)
    if field_name == "plaintext" and not given:
        raise user_error("missing plaintext to encrypt")
    if field_name != "plaintext" and not value:
        raise user_error("missing ciphertext to decrypt")
    return [single_item(body, field_name, value)], False


def first_pass(items: list[BatchItem], errors: list[str], check: str) -> None:
    """Context consistency and base64 decoding, before the key is looked up."""
    context_set = bool(items[0].context)
    for i, item in enumerate(items):
        if bool(item.context) != context_set:
            raise user_error(ERR_CONTEXT_MIX)
        try:
            if check == "plaintext":
                go_b64decode(item.plaintext)
            elif not item.ciphertext:
                errors[i] = "missing ciphertext to decrypt"
                continue
            if item.context:  # decoded, then unused: no key here is derived
                go_b64decode(item.context)
            if item.nonce:
                go_b64decode(item.nonce)
        except Base64Error as exc:
            errors[i] = str(exc)


def batch_status(body: JSON, result: Result, ok: bool, user: bool, internal: bool) -> Result:
    """``batchRequestResponse``'s status for a batch with failed items."""
    if not (user or internal):
        return result
    code = 400 if user else 500
    override, given = get_int(body, "partial_failure_response_code")
    if given and ok:
        if 1 <= override <= 599:
            code = override
        else:
            result.warnings.append(
                "invalid HTTP response code override from partial_failure_response_code, "
                f"reverting to {code}"
            )
    result.status = code
    return result


def cipher_results(
    items: list[BatchItem], errors: list[str], outputs: list[tuple[str, int]]
) -> Result:
    """``EncryptBatchResponseItem``s: omitempty fields, ``reference`` always present."""
    results: list[JSON] = []
    for item, error, (ciphertext, version) in zip(items, errors, outputs, strict=True):
        entry: JSON = {"error": error} if error else {"ciphertext": ciphertext}
        if not error:
            entry["key_version"] = version
        results.append(entry | {"reference": item.reference})
    return Result({"batch_results": results})
