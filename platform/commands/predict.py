"""``nerlab predict``: tag a file with a trained model or ensemble (a folder or a registered one), in Wojood format."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path


def cmd_predict(args) -> int:
    import torch

    from nerlab.models.ensemble import load_predictor
    from nerlab.models.scoring import sentence_spans
    from nerlab.models.wojood import read_input, write_file
    from nerlab.platform.tracking.stores import fetch_model, registry_uri

    if not Path(args.input).is_file():
        raise FileNotFoundError(f"{args.input}: no such file (--input)")
    uri = registry_uri(args.model, args.study, args.tracking_uri) if args.model.startswith(("models:/", "runs:/")) \
        else None
    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    with tempfile.TemporaryDirectory() as d:
        folder = fetch_model(args.model, uri, Path(d))
        model = load_predictor(folder, device=device)  # one tagger, or an ensemble of them
    task = args.task or model.schema.task
    sentences, fmt = read_input(args.input, args.format, task)
    pred = model.predict(sentences, task=task, batch_size=args.batch_size, device=device)
    if [s.tokens for s in pred] != [s.tokens for s in sentences]:  # never happens: windows keep every token
        raise RuntimeError("prediction lost or changed tokens")
    write_file(args.out, pred)
    summary = {"model": args.model, "input": args.input, "format": fmt, "task": task, "out": args.out,
               "sentences": len(pred), "tokens": sum(len(s) for s in pred),
               # as the scorer counts them (an I- after O starts a mention), so it matches `nerlab evaluate`
               "entities_tagged": sum(len(sentence_spans(s, task)) for s in pred)}
    if args.json:
        print(json.dumps(summary, indent=2, ensure_ascii=False))
    else:
        print(f"wrote {args.out}: {summary['sentences']} sentences, {summary['tokens']} tokens, "
              f"{summary['entities_tagged']} entities ({task}, input read as {fmt})")
    return 0


def register(sub) -> None:
    from nerlab.platform.commands import output_file, positive_int

    pr = sub.add_parser("predict", help="tag a file with a trained model; writes Wojood format for submission")
    pr.add_argument("--model", required=True, help="models:/NAME@champion, models:/NAME/VERSION, runs:/ID/model, "
                                                   "runs:/ID/tagger, models:/MODEL_ID or a model folder")
    pr.add_argument("--input", required=True, help="Wojood token-per-line file (tags optional) or raw text")
    pr.add_argument("--out", required=True, type=output_file)
    pr.add_argument("--task", choices=["flat", "nested"], help="default: the model's task")
    pr.add_argument("--format", choices=["auto", "wojood", "raw"], default="auto",
                    help="input format; raw: one sentence per line, whitespace tokenised")
    pr.add_argument("--study", help="the study whose registry holds --model (models:/ and runs:/ URIs)")
    pr.add_argument("--tracking-uri", help="the MLflow store or server holding --model")
    pr.add_argument("--batch-size", type=positive_int, default=32)
    pr.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    pr.add_argument("--json", action="store_true")
    pr.set_defaults(fn=cmd_predict)


