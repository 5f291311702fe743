"""The base of every error hcmi raises on purpose: its message alone says what is wrong and where."""


class HcmiError(Exception):
    """An expected failure (bad input, bad parameters, unusable data); reported without a traceback."""
