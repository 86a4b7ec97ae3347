"""The vendor-neutral option contract and the catalogue of underlyings the market knows.

A contract is what all three vendors name in their own syntax (`mocks.sim.symbols` converts);
the simulator only ever sees this form.
"""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass, field

from mocks.sim.rng import derive_rng


class Kind(enum.Enum):
    EQUITY = "equity"  # stocks and ETFs: US options, 09:30-16:00 ET, Black-Scholes
    INDEX = "index"  # cash indices: price reports about once a second, no trades of their own
    CRYPTO = "crypto"  # Deribit-style: 24/7, Black-76 on the forward, expiry 08:00 UTC


@dataclass(frozen=True, slots=True, order=True)
class OptionContract:
    """One listed option.

    `root` is the trading class as the vendors print it (SPXW, AMC1, BTC); `strike_milli` is the
    strike times 1000, exact: OCC's 8 digits and Theta's 1/10-cent unit are both this number.
    """

    root: str
    expiration: dt.date
    strike_milli: int
    right: str  # "C" or "P"
    # Computed once: contracts are dictionary keys on every event's way to its subscribers
    # (`mocks.hub.Hub.route`), and hashing a date each time cost as much as the rest of routing.
    # The same value the generated `__hash__` gives; not part of equality, order or repr.
    _hash: int = field(init=False, repr=False, compare=False)
    # Computed once too: the market names and seeds a contract's generators by it (three uses a
    # watch; `strftime` made it 3 us each), and the hub and the Massive session look events up
    # by it (a string's hash is cached in C; a contract's `__hash__` is a Python call).
    key: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "_hash", hash((self.root, self.expiration, self.strike_milli, self.right))
        )
        day = self.expiration
        # A stable, human-readable key (OCC layout) used for ordering and seeding.
        key = f"{self.root}{day.year % 100:02d}{day.month:02d}{day.day:02d}"
        object.__setattr__(self, "key", f"{key}{self.right}{self.strike_milli:08d}")

    def __hash__(self) -> int:
        return self._hash

    def __reduce__(self) -> tuple[type[OptionContract], tuple[str, dt.date, int, str]]:
        # Rebuilt through __init__: a string's hash differs from process to process.
        return (type(self), (self.root, self.expiration, self.strike_milli, self.right))

    @property
    def strike(self) -> float:
        return self.strike_milli / 1000.0

    @property
    def is_call(self) -> bool:
        return self.right == "C"

    @property
    def underlying(self) -> str:
        return underlying_of(self.root)


@dataclass(frozen=True, slots=True)
class Underlying:
    root: str
    kind: Kind
    spot: float  # level at the start of a run
    vol: float  # annualised at-the-money volatility
    penny_pilot: bool = False  # options quoted in 0.01 throughout
    jump_rate: float = 0.5  # expected jumps per trading day


# Roots whose trading class differs from the underlying they settle on.
_CLASS_TO_UNDERLYING = {"SPXW": "SPX", "NDXP": "NDX", "RUTW": "RUT", "VIXW": "VIX", "XSP": "SPX"}

_KNOWN: dict[str, Underlying] = {
    u.root: u
    for u in (
        Underlying("SPY", Kind.EQUITY, 575.0, 0.16, penny_pilot=True),
        Underlying("QQQ", Kind.EQUITY, 495.0, 0.20, penny_pilot=True),
        Underlying("IWM", Kind.EQUITY, 220.0, 0.22, penny_pilot=True),
        Underlying("DIA", Kind.EQUITY, 420.0, 0.14, penny_pilot=True),
        Underlying("AAPL", Kind.EQUITY, 225.0, 0.25, penny_pilot=True),
        Underlying("MSFT", Kind.EQUITY, 420.0, 0.24, penny_pilot=True),
        Underlying("NVDA", Kind.EQUITY, 130.0, 0.50, penny_pilot=True),
        Underlying("TSLA", Kind.EQUITY, 250.0, 0.60, penny_pilot=True),
        Underlying("AMZN", Kind.EQUITY, 190.0, 0.32, penny_pilot=True),
        Underlying("META", Kind.EQUITY, 580.0, 0.38, penny_pilot=True),
        Underlying("GOOGL", Kind.EQUITY, 170.0, 0.30, penny_pilot=True),
        Underlying("AMD", Kind.EQUITY, 150.0, 0.48, penny_pilot=True),
        Underlying("AMC", Kind.EQUITY, 4.5, 0.90, penny_pilot=True),
        Underlying("GME", Kind.EQUITY, 25.0, 0.85, penny_pilot=True),
        Underlying("JPM", Kind.EQUITY, 220.0, 0.22),
        Underlying("XOM", Kind.EQUITY, 115.0, 0.24),
        Underlying("SPX", Kind.INDEX, 5600.0, 0.15),
        Underlying("NDX", Kind.INDEX, 19500.0, 0.20),
        Underlying("RUT", Kind.INDEX, 2200.0, 0.22),
        Underlying("VIX", Kind.INDEX, 18.0, 0.90, jump_rate=2.0),
        Underlying("BTC", Kind.CRYPTO, 60000.0, 0.55, jump_rate=1.0),
        Underlying("ETH", Kind.CRYPTO, 3000.0, 0.65, jump_rate=1.0),
        Underlying("SOL", Kind.CRYPTO, 150.0, 0.80, jump_rate=1.0),
    )
}

CRYPTO_ROOTS = frozenset(r for r, u in _KNOWN.items() if u.kind is Kind.CRYPTO)
INDEX_ROOTS = frozenset(r for r, u in _KNOWN.items() if u.kind is Kind.INDEX)


def underlying_of(root: str) -> str:
    """The underlying a trading class settles on: SPXW -> SPX, AMC1 (adjusted) -> AMC."""
    if root in _CLASS_TO_UNDERLYING:
        return _CLASS_TO_UNDERLYING[root]
    if "_" in root:  # Deribit's linear options: XRP_USDC settles on XRP
        return root.split("_", 1)[0]
    if root[-1:].isdigit() and root.rstrip("0123456789"):
        return root.rstrip("0123456789")
    return root


def underlying(root: str, seed: int = 0) -> Underlying:
    """The catalogue entry for a root; an unknown root gets a plausible, seeded spot and vol."""
    name = underlying_of(root)
    known = _KNOWN.get(name)
    if known is not None:
        return known
    rng = derive_rng(seed, f"underlying-profile:{name}")
    spot = round(10 ** rng.uniform(1.0, 2.7), 2)  # $10 .. $500, log-uniform
    return Underlying(name, Kind.EQUITY, spot, rng.uniform(0.18, 0.7))
