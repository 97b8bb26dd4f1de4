"""The ``nerlab`` command line: parse, validate, call one function.

Exit codes: 0 success, 2 bad input (one line naming the file, line or key), 1 failure while running.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from nerlab.models.wojood import DataError
from nerlab.platform.typed import SpecError, UsageError, redact_text

BAD_INPUT = (UsageError, DataError, SpecError, FileNotFoundError)


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (exit code 2 through ``main``), like every other bad input."""

    def error(self, message: str):
        raise UsageError(f"{message} (see '{self.prog} --help')")


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


def _print(obj, as_json: bool, text: str) -> None:
    print(json.dumps(obj, indent=2, ensure_ascii=False) if as_json else text)


# ---- data ----------------------------------------------------------------------------------------------
def cmd_data_check(args) -> int:
    from nerlab.models.wojood import WOJOOD_TYPES, read_file, stats

    types = WOJOOD_TYPES if args.types == "wojood" else None
    results = {}
    for f in args.files:
        results[f] = stats(read_file(f, task=args.task, types=types))
    if args.json:
        _print(results, True, "")
        return 0
    for f, s in results.items():
        per_type = ", ".join(f"{t} {n}" for t, n in s["mentions_per_type"].items())
        print(f"{f}: {s['sentences']} sentences, {s['tokens']} tokens, {s['mentions']} mentions, "
              f"max nesting depth {s['max_nesting_depth']}, longest sentence {s['longest_sentence']} tokens")
        print(f"  mentions per type: {per_type or 'none'}")
    return 0


def cmd_data_synth(args) -> int:
    from nerlab.models.synth import write_corpus

    if args.sentences < 10:
        raise UsageError(f"--sentences must be at least 10, not {args.sentences}")
    paths = write_corpus(Path(args.out), args.sentences, args.seed)
    _print({k: str(v) for k, v in paths.items()}, args.json,
           "\n".join(f"wrote {k}: {v}" for k, v in paths.items()))
    return 0


def cmd_plm_tiny(args) -> int:
    from nerlab.models.tiny_plm import build_tiny_plm

    corpus = [Path(c) for c in args.corpus]
    for c in corpus:
        if not c.is_file():
            raise UsageError(f"{c}: no such file (--corpus)")
    if args.hidden % args.heads:
        raise UsageError(f"--hidden {args.hidden} must be a multiple of --heads {args.heads}")
    out = build_tiny_plm(corpus, Path(args.out), layers=args.layers, hidden=args.hidden, heads=args.heads,
                         vocab_size=args.vocab_size, seed=args.seed)
    _print({"out": str(out)}, args.json, f"wrote a tiny BERT to {out}")
    return 0


# ---- evaluation ----------------------------------------------------------------------------------------
def _sentence_lines(path: str) -> list[int]:
    """The line number where each sentence of a (valid) Wojood file starts."""
    starts, blank = [], True
    for lineno, raw in enumerate(Path(path).read_bytes().split(b"\n"), start=1):
        empty = not raw.strip().lstrip(b"\xef\xbb\xbf").strip()
        if not empty and blank:
            starts.append(lineno)
        blank = empty
    return starts


def _check_aligned(gold_path: str, gold, pred_path: str, pred) -> None:
    """Predictions must hold gold's sentences and tokens; a mismatch names both files and lines."""
    for i, (g, p) in enumerate(zip(gold, pred)):
        if g.tokens != p.tokens:
            gl, pl = _sentence_lines(gold_path)[i], _sentence_lines(pred_path)[i]
            raise DataError(f"{pred_path}:{pl}: sentence {i + 1} has other tokens than {gold_path}:{gl} "
                            f"({len(p)} vs {len(g)} tokens)")
    if len(gold) != len(pred):
        raise DataError(f"{pred_path}: {len(pred)} sentences, but {gold_path} has {len(gold)}")


def cmd_evaluate(args) -> int:
    from nerlab.models.scoring import score
    from nerlab.models.wojood import read_file

    gold = read_file(args.gold, task=args.task)
    pred = read_file(args.pred, task=args.task)
    _check_aligned(args.gold, gold, args.pred, pred)
    report = score(gold, pred, args.task)
    _print(report.to_dict(), args.json, report.format())
    return 0


# ---- parser --------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="nerlab", description="Arabic flat and nested NER experiments at scale.")
    sub = p.add_subparsers(dest="verb", required=True, metavar="VERB")

    data = sub.add_parser("data", help="check or synthesise Wojood-format data").add_subparsers(
        dest="data_verb", required=True, metavar="ACTION")
    c = data.add_parser("check", help="validate files and print statistics")
    c.add_argument("files", nargs="+")
    c.add_argument("--task", choices=["flat", "nested"], default="nested")
    c.add_argument("--types", choices=["wojood", "any"], default="wojood",
                   help="'wojood': only the 21 Wojood types are allowed; 'any': types of the data")
    c.add_argument("--json", action="store_true")
    c.set_defaults(fn=cmd_data_check)
    s = data.add_parser("synth", help="write a synthetic nested Arabic corpus (train/val/test)")
    s.add_argument("--out", required=True)
    s.add_argument("--sentences", type=positive_int, default=2000)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=cmd_data_synth)

    plm = sub.add_parser("plm", help="build pretrained-encoder stand-ins").add_subparsers(
        dest="plm_verb", required=True, metavar="ACTION")
    t = plm.add_parser("tiny", help="a small BERT with a WordPiece vocabulary learned from a corpus")
    t.add_argument("--corpus", nargs="+", required=True)
    t.add_argument("--out", required=True)
    t.add_argument("--layers", type=positive_int, default=2)
    t.add_argument("--hidden", type=positive_int, default=64)
    t.add_argument("--heads", type=positive_int, default=2)
    t.add_argument("--vocab-size", type=positive_int, default=3000)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--json", action="store_true")
    t.set_defaults(fn=cmd_plm_tiny)

    e = sub.add_parser("evaluate", help="score predictions against gold (seqeval semantics)")
    e.add_argument("--gold", required=True)
    e.add_argument("--pred", required=True)
    e.add_argument("--task", choices=["flat", "nested"], required=True)
    e.add_argument("--json", action="store_true")
    e.set_defaults(fn=cmd_evaluate)

    from nerlab.platform.commands import register
    register(sub)
    return p


def _terminated(signum, frame):
    """SIGTERM ends a command like Ctrl-C does: cleanups run, servers and Ray stop with it."""
    sys.exit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    import signal
    import threading

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminated)
    try:
        args = build_parser().parse_args(argv)
        return args.fn(args)
    except BAD_INPUT as e:
        # One line, and never a credential a spec value carried (a tracking URI's user:password@).
        msg = str(e).splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"nerlab: error: {redact_text(msg)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
