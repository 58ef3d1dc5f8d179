"""The exception for an invalid bit policy."""

from __future__ import annotations


class PolicyError(ValueError):
    """Invalid bit policy, rule or quantizer.

    `field` is the dotted path of the invalid field ("rules[2].quantizer.format"),
    so that a caller can point at it. The message names the rule and the field too.
    """

    def __init__(self, message: str, *, field: str = "") -> None:
        super().__init__(message)
        self.field = field
