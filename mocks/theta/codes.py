"""Theta's numeric codes for exchanges and conditions, and the mapping from the simulator's
vendor-neutral names to them.

The code numbers are Theta's own tables (docs.thetadata.us, "Exchanges", "Trade Conditions",
"Quote Conditions"; the same numbers in the tdbe crate of the ThetaDataDx reimplementation)
[doc/re]. Which code stands for which neutral name is our reading of those tables; where the
tables have no exact match the choice is marked [inv].
"""

from __future__ import annotations

from types import MappingProxyType

# -- exchanges ---------------------------------------------------------------------------------

NASDAQ = 1  # NQEX
NYSE = 3
AMEX = 4
CBOE = 5
ISE = 6  # ISEX
NYSE_ARCA = 7  # PACF
PHLX = 9  # PHIL
BOSTON_OPTIONS = 11  # BOST, "Boston Stock/Options Exchange"
ISE_MERCURY = 22  # MRCY
ISE_GEMINI = 31  # GEMI
C2 = 42
MIAX = 43
MIAX_EMERALD = 46  # EMLD
NASDAQ_BX = 47  # NQBX, "NASDAQ Boston"
FINRA_NASDAQ_TRF = 57  # NQNX: off-exchange stock trades
BATS = 60
BATS_Y = 63
EDGA = 64
EDGX = 65
IEX = 68
MIAX_PEARL = 69  # PERL
MEMX = 73
MIAX_SAPPHIRE = 76  # SPHR

# The simulator's option venues (MIC short names, `mocks.sim.exchanges`) -> Theta's codes.
OPTION_EXCHANGES = MappingProxyType(
    {
        "XCBO": CBOE,
        "C2OX": C2,
        "BATO": BATS,  # Cboe BZX Options: Theta has no separate code, BATS is the venue [inv]
        "EDGO": EDGX,  # Cboe EDGX Options [inv, as above]
        "XISX": ISE,
        "GMNI": ISE_GEMINI,
        "MCRY": ISE_MERCURY,
        "XPHO": PHLX,
        "XNDQ": NASDAQ,
        "XBXO": NASDAQ_BX,
        "XBOX": BOSTON_OPTIONS,
        "XMIO": MIAX,
        "EMLD": MIAX_EMERALD,
        "MPRL": MIAX_PEARL,
        "SPHR": MIAX_SAPPHIRE,
        "ARCO": NYSE_ARCA,
        "AMXO": AMEX,
        "MXOP": MEMX,
    }
)

# Stock venues the mock's derived stock quotes and trades are drawn from, with rough shares [inv].
STOCK_QUOTE_EXCHANGES: tuple[tuple[int, float], ...] = (
    (NASDAQ, 25.0),
    (NYSE, 15.0),
    (NYSE_ARCA, 12.0),
    (BATS, 10.0),
    (EDGX, 10.0),
    (MEMX, 8.0),
    (IEX, 5.0),
    (BATS_Y, 3.0),
    (EDGA, 2.0),
)
# Trades add the FINRA trade reporting facility: off-exchange prints are over a third of volume.
STOCK_TRADE_EXCHANGES: tuple[tuple[int, float], ...] = (
    *STOCK_QUOTE_EXCHANGES,
    (FINRA_NASDAQ_TRF, 45.0),
)

# Index price reports come from Cboe's CGIF feed; the vendor's SPX sample carries exchange 5 [doc].
INDEX_EXCHANGE = CBOE

# -- conditions --------------------------------------------------------------------------------

TRADE_REGULAR = 0
TRADE_AUTO_EXECUTION = 18  # "Only found in OPRA -- options trades, and quite common" [doc]
TRADE_ODD_LOT = 115

# Neutral trade-condition names (`mocks.sim.exchanges.TRADE_CONDITIONS`) -> Theta's codes.
OPTION_TRADE_CONDITIONS = MappingProxyType(
    {
        "auto_execution": TRADE_AUTO_EXECUTION,
        "regular": TRADE_REGULAR,
        "intermarket_sweep": 95,  # INTERMARKET_SWEEP
        "multi_leg_auto": 130,  # MULTI_LEG_AUTOELEC_TRADE
        "multi_leg_auction": 131,  # MULTI_LEG_AUCTION
        "single_leg_auction": 125,  # SINGLE_LEG_AUCTION_NON_ISO
        "stock_option": 138,  # STK_OPT_AUTO_ELEC_TRADE
        "floor": 129,  # SINGLE_LEG_FLOOR_TRADE
    }
)

QUOTE_REGULAR = 0
QUOTE_NATIONAL_BBO = 50  # the option NBBO samples carry 50 on both sides [doc]
