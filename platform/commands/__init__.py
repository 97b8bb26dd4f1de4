"""The ``nerlab`` verbs, one module per group; each registers its own sub-parsers."""

import argparse

from nerlab.platform.specs.paths import writable_file, writable_folder
from nerlab.platform.errors import SpecError


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


def output_folder(text: str) -> str:
    """An argparse type: a folder the verb will create or fill."""
    return _checked(writable_folder, text)


def output_file(text: str) -> str:
    """An argparse type: a file the verb will write."""
    return _checked(writable_file, text)


def _checked(check, text: str) -> str:
    try:
        check(text)
    except SpecError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def port_number(text: str) -> int:
    """An argparse type: a TCP port, 1 to 65535."""
    value = positive_int(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"must be a port from 1 to 65535, not {value}")
    return value
