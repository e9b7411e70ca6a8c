"""The ``frugalcv`` command."""

from __future__ import annotations

import argparse
import json
import logging
import sys

from frugalcv import __version__
from frugalcv.errors import FrugalError


def _size(text: str) -> int:
    """Parse 100000, 64K, 256M, 1G (binary units)."""
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    t = text.strip().lower().rstrip("ib").rstrip("b") if text[-1:].lower() == "b" else text.strip().lower()
    try:
        if t and t[-1] in units:
            return int(float(t[:-1]) * units[t[-1]])
        return int(t)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (use e.g. 100000, 64K, 256M, 1G)") from None


def cmd_shard(args) -> int:
    from frugalcv.sharding import write_shards

    out = write_shards(
        args.kind,
        args.src,
        args.dst,
        split=args.split or None,
        max_shard_bytes=args.max_shard_bytes,
        max_shard_samples=args.max_shard_samples,
        workers=args.workers,
        progress=not args.no_progress,
    )
    for split, m in out.items():
        print(f"{split}: {m.num_samples} samples in {len(m.shards)} shards -> {m.location}")
    return 0


def cmd_shards_info(args) -> int:
    from frugalcv.sharding import summary

    info = summary(args.url)
    if args.json:
        print(json.dumps(info, indent=1))
        return 0
    print(f"{info['url']}: {info['kind']} / {info['split']} ({info['task']})")
    print(f"  samples {info['num_samples']}, shards {info['num_shards']}, {info['bytes'] / 1e6:.1f} MB")
    classes = info["classes"]
    shown = ", ".join(classes[:10]) + (f", … ({len(classes)} in all)" if len(classes) > 10 else "")
    print(f"  classes: {shown}")
    print(f"  fields: {', '.join(f'{k} ({v})' for k, v in info['schema'].items())}")
    if info["extra"]:
        print(f"  extra: {json.dumps(info['extra'])}")
    print(f"  manifest sha256 {info['manifest_sha256']}")
    return 0


def cmd_shards_verify(args) -> int:
    from frugalcv.sharding import verify

    report = verify(args.url, decode=args.decode)
    for url, reason in report.bad:
        print(f"BAD {url}: {reason}")
    status = "OK" if report.ok else f"{len(report.bad)} bad shard(s)"
    print(f"{report.url}: {report.shards} shards, {report.samples} samples readable: {status}")
    return 0 if report.ok else 1


def cmd_models_list(args) -> int:
    from frugalcv.models import list_models

    for name, desc in list_models().items():
        print(f"{name:28s} {desc}")
    return 0


def cmd_models_flops(args) -> int:
    from frugalcv.models.flops import flops_report

    rep = flops_report(args.name)
    if args.json:
        print(json.dumps(rep))
    else:
        for k, v in rep.items():
            if isinstance(v, list):
                v = f"[{len(v)} values]"
            elif isinstance(v, float | int) and not isinstance(v, bool) and abs(v) >= 1e5:
                v = f"{v:.4g}"
            print(f"{k:24s} {v}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="frugalcv", description=__doc__)
    p.add_argument("--version", action="version", version=f"frugalcv {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    p.add_argument("--debug", action="store_true", help="show the traceback of an error")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("shard", help="convert a dataset into WebDataset shards + manifest.json")
    s.add_argument("kind", help="dataset kind: cifar10, cifar100, imagefolder, cityscapes, gta5, synthia, video-features, digits, street-scenes, video-digits, video-frames, voc, voc-pairs")
    s.add_argument("src", help="source folder in the dataset's real layout (digits, street-scenes, video-digits: 'sklearn')")
    s.add_argument("dst", help="destination fsspec URL; each split goes to DST/<split>/")
    s.add_argument("--split", action="append", help="split to convert (repeatable; default: every split present)")
    s.add_argument("--max-shard-bytes", type=_size, default=None, help="default 256M")
    s.add_argument("--max-shard-samples", type=int, default=None)
    s.add_argument("--workers", type=int, default=0, help="encoding processes (output is identical for any value)")
    s.add_argument("--no-progress", action="store_true")
    s.set_defaults(fn=cmd_shard)

    sh = sub.add_parser("shards", help="inspect sharded datasets").add_subparsers(dest="shards_command", required=True)
    i = sh.add_parser("info", help="print the manifest summary")
    i.add_argument("url")
    i.add_argument("--json", action="store_true")
    i.set_defaults(fn=cmd_shards_info)
    v = sh.add_parser("verify", help="re-read every shard and check counts and sha256")
    v.add_argument("url")
    v.add_argument("--decode", action="store_true", help="also decode every sample")
    v.set_defaults(fn=cmd_shards_verify)

    m = sub.add_parser("models", help="model registry").add_subparsers(dest="models_command", required=True)
    ml = m.add_parser("list", help="list registered models")
    ml.set_defaults(fn=cmd_models_list)
    mf = m.add_parser("flops", help="FLOPs per image (conv + linear, 2 per multiply-accumulate)")
    mf.add_argument("name")
    mf.add_argument("--json", action="store_true")
    mf.set_defaults(fn=cmd_models_flops)

    from frugalcv import cli_workflows

    cli_workflows.add_commands(sub)
    from frugalcv import cli_ui

    cli_ui.add_command(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    if not args.verbose:  # one line says a store is unreachable; urllib3's per-retry lines add nothing
        logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)
    from frugalcv.workflows.pipeline.redact import RedactingFilter

    for handler in logging.getLogger().handlers:  # every log line this process prints is redacted
        handler.addFilter(RedactingFilter())
    try:
        return args.fn(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        if args.debug:
            raise
        from frugalcv.sharding.storage import redact

        if isinstance(e, FrugalError):
            print(f"error: {redact(str(e))}", file=sys.stderr)
            return 2
        # not an error frugalcv anticipated: one line, the traceback on request
        text = redact(str(e).strip().splitlines()[0] if str(e).strip() else "")
        print(f"error: {type(e).__name__}: {text} (run with --debug for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
