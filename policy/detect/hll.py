"""A small HyperLogLog: how many distinct primary keys a person has seen, in 4 KiB per sketch.

Flajolet et al. 2007 with 64-bit hashes (no large-range correction needed) and linear counting for
small counts. The register sum is kept up to date as registers change, so an estimate costs O(1)
rather than a pass over the registers: the coverage rule asks after every statement. The hash is
BLAKE2b, not Python's ``hash``, so that a sketch saved by one process means the same to the next.
With the default 2**12 registers the standard error is about 1.6%.
"""

from __future__ import annotations

import base64
import hashlib
import math

DEFAULT_PRECISION = 12


def key_hash(value: str) -> int:
    """A stable 64-bit hash of a key's text."""
    digest = hashlib.blake2b(value.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big")


class HyperLogLog:
    __slots__ = ("_alpha_mm", "_bits", "_m", "_p", "_registers", "_sum", "_zeros")

    def __init__(self, precision: int = DEFAULT_PRECISION, registers: bytes | None = None) -> None:
        if not 4 <= precision <= 18:
            raise ValueError(f"precision must be 4 to 18, got {precision}")
        self._p = precision
        self._m = 1 << precision
        self._bits = 64 - precision
        self._alpha_mm = 0.7213 / (1 + 1.079 / self._m) * self._m * self._m
        if registers is None:
            self._registers = bytearray(self._m)
        else:
            if len(registers) != self._m:
                raise ValueError(f"expected {self._m} registers, got {len(registers)}")
            self._registers = bytearray(registers)
        self._sum = math.fsum(2.0**-r for r in self._registers)
        self._zeros = self._registers.count(0)

    @property
    def precision(self) -> int:
        return self._p

    def add_hash(self, hashed: int) -> None:
        index = hashed >> self._bits
        rest = hashed & ((1 << self._bits) - 1)
        rank = self._bits - rest.bit_length() + 1
        old = self._registers[index]
        if rank > old:
            self._registers[index] = rank
            self._sum += 2.0**-rank - 2.0**-old
            if old == 0:
                self._zeros -= 1

    def add(self, value: str) -> None:
        self.add_hash(key_hash(value))

    def estimate(self) -> float:
        raw = self._alpha_mm / self._sum
        if raw <= 2.5 * self._m and self._zeros:
            return self._m * math.log(self._m / self._zeros)
        return raw

    def copy(self) -> HyperLogLog:
        return HyperLogLog(self._p, bytes(self._registers))

    def to_text(self) -> str:
        """The registers as base64 (for the detector's saved state)."""
        return base64.b64encode(bytes(self._registers)).decode("ascii")

    @classmethod
    def from_text(cls, text: str, precision: int = DEFAULT_PRECISION) -> HyperLogLog:
        return cls(precision, base64.b64decode(text.encode("ascii"), validate=True))
