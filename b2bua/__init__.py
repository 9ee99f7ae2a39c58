"""B2BUA: a pure-Python SIP back-to-back user agent with push wake-up."""
