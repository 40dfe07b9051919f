"""Fixtures for the Transit emulator's own tests."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.transit_helpers import ROOT, vault
from transit_emulator import TransitEmulator


@pytest.fixture
def emu() -> Iterator[TransitEmulator]:
    with TransitEmulator(root_token=ROOT) as emulator:
        yield emulator


@pytest.fixture
def client(emu: TransitEmulator) -> Any:
    return vault(emu)
