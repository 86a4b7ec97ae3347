"""feedlab's mock vendor servers. `mocks.background(vendor)` serves one from a thread for code
that is not Trio (scripts, notebooks, asyncio and synchronous tests); `mocks.testing.run_mock`
runs one inside a Trio run. Importing this package stays cheap: the machinery loads on first use.
"""

from mocks.background import BackgroundMock, MockFailed, background

__all__ = ["BackgroundMock", "MockFailed", "background"]
