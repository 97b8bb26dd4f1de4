"""``nerlab data check|synth``, ``nerlab plm tiny`` and ``nerlab evaluate``: the task's data, encoders and
scores, without Ray or MLflow."""

from __future__ import annotations

import json
from pathlib import Path

from nerlab.platform.errors import UsageError


def _print(obj, as_json: bool, text: str) -> None:
    print(json.dumps(obj, indent=2, ensure_ascii=False) if as_json else text)


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


def cmd_evaluate(args) -> int:
    from nerlab.models.scoring import check_aligned, score
    from nerlab.models.wojood import read_file, read_predictions

    gold = read_file(args.gold, task=args.task)
    pred = read_predictions(args.pred, task=args.task)  # also the reference system's token/gold/pred files
    check_aligned(gold, pred, args.gold, args.pred)
    report = score(gold, pred, args.task)
    _print(report.to_dict(), args.json, report.format())
    return 0


def register(sub) -> None:
    from nerlab.platform.commands import output_folder, positive_int

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
    s.add_argument("--out", required=True, type=output_folder)
    s.add_argument("--sentences", type=positive_int, default=2000)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=cmd_data_synth)

    plm = sub.add_parser("plm", help="build pretrained-encoder stand-ins").add_subparsers(
        dest="plm_verb", required=True, metavar="ACTION")
    t = plm.add_parser("tiny", help="a small BERT with a WordPiece vocabulary learned from a corpus")
    t.add_argument("--corpus", nargs="+", required=True)
    t.add_argument("--out", required=True, type=output_folder)
    t.add_argument("--layers", type=positive_int, default=2)
    t.add_argument("--hidden", type=positive_int, default=64)
    t.add_argument("--heads", type=positive_int, default=2)
    t.add_argument("--vocab-size", type=positive_int, default=3000)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--json", action="store_true")
    t.set_defaults(fn=cmd_plm_tiny)

    e = sub.add_parser("evaluate", help="score predictions against gold (seqeval semantics)")
    e.add_argument("--gold", required=True)
    e.add_argument("--pred", required=True, help="Wojood format (an O among entity tags reads as nothing), or the "
                   "reference system's prediction file (header, then token<TAB>gold<TAB>pred, tags joined by |)")
    e.add_argument("--task", choices=["flat", "nested"], required=True)
    e.add_argument("--json", action="store_true")
    e.set_defaults(fn=cmd_evaluate)
