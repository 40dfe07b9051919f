"""What the load generator sends: realistic values, requests pre-encoded as protobuf bytes.

Requests are serialized once (or assembled from serialized parts: protobuf messages concatenate),
so the load generator spends its CPU on gRPC, not on building messages. The same bytes go to
pdvault and to the no-op baseline server.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from pdvault.v1 import common_pb2, token_service_pb2

TOKENIZE = "/pdvault.v1.TokenService/Tokenize"
DETOKENIZE = "/pdvault.v1.TokenService/Detokenize"

# The demo caller that may both store and read (full view) these categories for `payment`.
CALLER = "payment"
PURPOSE = "payment"
CATEGORIES = (
    "card_number",
    "card_holder",
    "card_expiry",
    "bank_account",
    "name",
    "email",
    "phone",
    "address",
)

Kind = Literal["tokenize", "detokenize", "mix"]


@dataclass(frozen=True)
class Workload:
    """One measured workload. `batch` fields (or tokens) per request."""

    name: str
    kind: Kind
    batch: int = 1
    new_subjects: bool = False  # tokenize: a subject never seen before on every request
    cold: bool = False  # detokenize: tokens of subjects whose data keys the server never cached
    detokenize_share: float = 0.8  # mix only
    concurrency: int = 16  # in-flight requests for the closed loop (max throughput)
    description: str = ""

    @property
    def baseline(self) -> str:
        """The no-op workload that bounds this one (same method and message shapes)."""
        if self.kind == "mix":
            return f"mix_{self.batch}"
        return f"{self.kind}_{self.batch}"


# The default suite, per database. Known subjects' data keys are cached (warmed up first). The
# order matters: workloads that add keys to the server's cache (cold, new) come last, so that
# they cannot push the known subjects' keys out of it.
SUITE: tuple[Workload, ...] = (
    Workload("tokenize_1", "tokenize", 1, description="1 field per call, known subject"),
    Workload("detokenize_1", "detokenize", 1, description="1 token per call, cached keys"),
    Workload(
        "mix_1",
        "mix",
        1,
        description="80% detokenize / 20% tokenize, 1 field per call, known subjects",
    ),
    Workload(
        "tokenize_100", "tokenize", 100, concurrency=8, description="batches of 100, known subject"
    ),
    Workload(
        "detokenize_100",
        "detokenize",
        100,
        concurrency=8,
        description="batches of 100 random tokens, cached keys",
    ),
    Workload(
        "detokenize_100_cold",
        "detokenize",
        100,
        cold=True,
        concurrency=8,
        description="batches of 100 tokens over 10 subjects whose keys are not cached (bounded)",
    ),
    Workload(
        "tokenize_1_new",
        "tokenize",
        1,
        new_subjects=True,
        description="1 field per call, a new subject each call (a data key is created and wrapped)",
    ),
    Workload(
        "tokenize_100_new",
        "tokenize",
        100,
        new_subjects=True,
        concurrency=8,
        description="batches of 100 for a new subject (cold: one wrap per request)",
    ),
)

# The no-op baseline runs these: the same methods and message shapes.
NOOP_SUITE: tuple[Workload, ...] = (
    Workload("tokenize_1", "tokenize", 1),
    Workload("detokenize_1", "detokenize", 1),
    Workload("mix_1", "mix", 1),
    Workload("tokenize_100", "tokenize", 100, concurrency=8),
    Workload("detokenize_100", "detokenize", 100, concurrency=8),
)

SOAK = Workload("soak_mix_1", "mix", 1, description="80% detokenize / 20% tokenize, 1 per call")


@dataclass(frozen=True)
class Dataset:
    """What exists in the database: known subjects and their tokens, and cold token groups."""

    subjects: tuple[str, ...] = ()
    tokens: tuple[str, ...] = ()
    cold_groups: tuple[tuple[str, ...], ...] = ()
    run_tag: str = field(default_factory=lambda: uuid.uuid4().hex[:8])


# -- values -----------------------------------------------------------------------------------


def _luhn_check_digit(body: str) -> str:
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = ord(ch) - 48
        if i % 2 == 0:  # doubled: these become the odd positions once the check digit is added
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return str((10 - total % 10) % 10)


_FIRST = ("Ana", "Bo", "Chen", "Dara", "Emeka", "Fatima", "Goro", "Hana", "Ivan", "Jun")
_LAST = ("Sato", "Okafor", "Nguyen", "Silva", "Kowalski", "Haddad", "Larsen", "Mehta")
_STREETS = ("Maple Street", "Rue de la Paix", "Hauptstrasse", "Calle Mayor", "Sakura-dori")
_CITIES = ("Springfield 12345", "75002 Paris", "10115 Berlin", "28013 Madrid", "Tokyo 100-0001")


def sample_value(rng: random.Random, category: str) -> str:
    """A valid value of `category`, of a realistic size."""
    if category == "card_number":
        body = "4" + "".join(rng.choice("0123456789") for _ in range(14))
        return body + _luhn_check_digit(body)
    if category in ("card_holder", "name"):
        return f"{rng.choice(_FIRST)} {rng.choice(_LAST)}"
    if category == "card_expiry":
        return f"{rng.randint(1, 12):02d}/{rng.randint(27, 35)}"
    if category == "bank_account":
        digits = "".join(rng.choice("0123456789") for _ in range(18))
        return f"DE{rng.randint(10, 99)}{digits}"
    if category == "email":
        return f"{rng.choice(_FIRST).lower()}.{rng.randint(1, 99999)}@example.com"
    if category == "phone":
        return f"+81 90 {rng.randint(1000, 9999)} {rng.randint(1000, 9999)}"
    if category == "address":
        return f"{rng.randint(1, 999)} {rng.choice(_STREETS)}, {rng.choice(_CITIES)}"
    raise ValueError(f"no sample values for {category}")


def sample_fields(rng: random.Random, n: int) -> list[token_service_pb2.TokenizeField]:
    out = []
    for i in range(n):
        category = CATEGORIES[(i + rng.randrange(len(CATEGORIES))) % len(CATEGORIES)]
        out.append(
            token_service_pb2.TokenizeField(
                category=category, value=common_pb2.Value(text=sample_value(rng, category))
            )
        )
    return out


def sample_values(rng: random.Random, n: int) -> list[bytes]:
    """Plaintexts as pdvault seals them (a kind byte, then the UTF-8 value), for the crypto
    baseline: the same categories in the same proportions."""
    return [b"\x00" + sample_value(rng, CATEGORIES[i % len(CATEGORIES)]).encode() for i in range(n)]


# -- requests as bytes ------------------------------------------------------------------------


def tokenize_body(subject: str, fields: Sequence[token_service_pb2.TokenizeField]) -> bytes:
    return token_service_pb2.TokenizeRequest(subject=subject, fields=fields).SerializeToString()


def subject_part(subject: str) -> bytes:
    return token_service_pb2.TokenizeRequest(subject=subject).SerializeToString()


def fields_part(fields: Sequence[token_service_pb2.TokenizeField]) -> bytes:
    return token_service_pb2.TokenizeRequest(fields=fields).SerializeToString()


def request_id_part() -> bytes:
    """A fresh request id, as pdvault_client.Client sends on every Tokenize (field 3)."""
    return token_service_pb2.TokenizeRequest(request_id=str(uuid.uuid4())).SerializeToString()


def detokenize_body(tokens: Sequence[str]) -> bytes:
    return token_service_pb2.DetokenizeRequest(
        tokens=list(tokens), purpose=PURPOSE
    ).SerializeToString()


class Exhausted(Exception):
    """The bounded supply of cold tokens ran out."""


class RequestSource:
    """Hands out (method, request bytes) for one workload. One per load-generator process."""

    VARIANTS = 256

    def __init__(self, workload: Workload, data: Dataset, seed: int, tag: str) -> None:
        self._w = workload
        self._rng = random.Random(seed)
        self._tag = f"bench-{data.run_tag}-{tag}"
        self._seq = 0
        self._i = 0
        rng = self._rng
        self._fields = [fields_part(sample_fields(rng, workload.batch)) for _ in range(16)]
        self._tokenize: list[bytes] = []
        self._detokenize: list[bytes] = []
        self._cold = list(data.cold_groups)
        if workload.kind in ("tokenize", "mix") and not workload.new_subjects:
            if not data.subjects:
                raise ValueError("tokenize for known subjects needs seeded subjects")
            self._tokenize = [
                subject_part(rng.choice(data.subjects)) + rng.choice(self._fields)
                for _ in range(self.VARIANTS)
            ]
        if workload.kind in ("detokenize", "mix") and not workload.cold:
            if not data.tokens:
                raise ValueError("detokenize needs seeded tokens")
            k = min(workload.batch, len(data.tokens))
            self._detokenize = [
                detokenize_body(rng.sample(data.tokens, k)) for _ in range(self.VARIANTS)
            ]

    def next(self) -> tuple[str, bytes]:
        w = self._w
        self._i += 1
        if w.kind == "mix":
            # A fixed pattern, not a coin toss: exactly the share asked for, in every window.
            every = round(1 / (1 - w.detokenize_share)) if w.detokenize_share < 1 else 0
            if every and self._i % every == 0:
                return TOKENIZE, self._known_tokenize()
            return DETOKENIZE, self._detokenize[self._i % self.VARIANTS]
        if w.kind == "tokenize":
            if w.new_subjects:
                self._seq += 1
                body = subject_part(f"{self._tag}-{self._seq}")
                return TOKENIZE, body + self._fields[self._seq % 16] + request_id_part()
            return TOKENIZE, self._known_tokenize()
        if w.cold:
            if not self._cold:
                raise Exhausted()
            return DETOKENIZE, detokenize_body(self._cold.pop())
        return DETOKENIZE, self._detokenize[self._i % self.VARIANTS]

    def _known_tokenize(self) -> bytes:
        return self._tokenize[self._i % self.VARIANTS] + request_id_part()
