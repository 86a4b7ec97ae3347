"""The venues the simulated market quotes and trades on, by vendor-neutral short names.

US options: the 18 exchanges that report to OPRA, by MIC, with rough shares of quoting and trading
activity. Each vendor mock maps these names to its own numeric ids. Crypto options trade on the
exchange the client named (Deribit by default).
"""

from __future__ import annotations

# (MIC, name, weight) — weights are rough market shares, enough to make the mix look real.
US_OPTIONS_EXCHANGES: tuple[tuple[str, str, float], ...] = (
    ("XCBO", "Cboe Options", 16.0),
    ("C2OX", "Cboe C2 Options", 3.0),
    ("BATO", "Cboe BZX Options", 4.0),
    ("EDGO", "Cboe EDGX Options", 4.0),
    ("XISX", "Nasdaq ISE", 7.0),
    ("GMNI", "Nasdaq GEMX", 3.0),
    ("MCRY", "Nasdaq MRX", 1.0),
    ("XPHO", "Nasdaq PHLX", 10.0),
    ("XNDQ", "Nasdaq Options Market", 5.0),
    ("XBXO", "Nasdaq BX Options", 1.0),
    ("XBOX", "BOX Options", 4.0),
    ("XMIO", "MIAX Options", 7.0),
    ("EMLD", "MIAX Emerald", 4.0),
    ("MPRL", "MIAX Pearl", 5.0),
    ("SPHR", "MIAX Sapphire", 2.0),
    ("ARCO", "NYSE Arca Options", 9.0),
    ("AMXO", "NYSE American Options", 9.0),
    ("MXOP", "MEMX Options", 6.0),
)

US_OPTIONS_MICS: tuple[str, ...] = tuple(mic for mic, _, _ in US_OPTIONS_EXCHANGES)
US_OPTIONS_WEIGHTS: tuple[float, ...] = tuple(w for _, _, w in US_OPTIONS_EXCHANGES)

DEFAULT_CRYPTO_EXCHANGE = "deribit"

# Proprietary products listed on one exchange only: Cboe's index options.
SINGLE_LISTED = {"SPX": "XCBO", "SPXW": "XCBO", "XSP": "XCBO", "VIX": "XCBO", "VIXW": "XCBO"}

# Neutral trade-condition names with their rough frequency; vendors map them to their own codes.
TRADE_CONDITIONS: tuple[tuple[str, float], ...] = (
    ("auto_execution", 55.0),
    ("regular", 15.0),
    ("intermarket_sweep", 10.0),
    ("multi_leg_auto", 8.0),
    ("multi_leg_auction", 4.0),
    ("single_leg_auction", 4.0),
    ("stock_option", 2.0),
    ("floor", 2.0),
)
