"""The ``nerlab`` verbs, one module per group; each registers its own sub-parsers."""

import argparse


def register(sub) -> None:
    """Add every verb to the ``nerlab`` parser, in the order ``nerlab --help`` lists them."""
    from nerlab.platform.commands import data, predict, results, study, train, ui

    for module in (data, train, study, results, predict, ui):
        module.register(sub)


def positive_int(text: str) -> int:
    """An argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, not {value}")
    return value


def port_number(text: str) -> int:
    """An argparse type: a TCP port, 1 to 65535."""
    value = positive_int(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"must be a port from 1 to 65535, not {value}")
    return value
