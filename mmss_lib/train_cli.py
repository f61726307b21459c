"""``mmss train``: train and evaluate systems over categories and seeds from the command line
(an experiment of :func:`mmss_lib.experiments.run_experiment`), printing the mean and std over
seeds of the test metrics and the product-level summary (means over products with 95% bootstrap
intervals, paired test against the best other system; also written as CSV under the runs root).
``--folds K`` evaluates by K-fold cross-validation over each category's products."""
from __future__ import annotations

import argparse
import json
from typing import Sequence

from mmss_lib.errors import DataError
from mmss_lib.experiments import run_experiment, summarize
from mmss_lib.train import METRIC_NAMES, TrainConfig


def _parse_options(items: Sequence[str]) -> dict:
    out = {}
    for it in items or ():
        if "=" not in it:
            raise DataError(f"--option {it!r}: expected key=value (value as JSON, e.g. d=64 or subtasks='[\"ptrt\"]')")
        k, v = it.split("=", 1)
        if not k.strip():
            raise DataError(f"--option {it!r}: expected key=value with a non-empty key")
        try:
            out[k] = json.loads(v)
        except json.JSONDecodeError:
            out[k] = v          # a bare word is a string (the model option's type is checked by build_model)
    return out


def build_parser(prog: str) -> argparse.ArgumentParser:
    d = TrainConfig()
    ap = argparse.ArgumentParser(prog=prog, description="Train and evaluate systems over seeds "
                                 "(results: runs/{dataset}/{category}/{system}[__variant]/seed{n}/).")
    ap.add_argument("--data-root", required=True, help="folder holding {dataset}/{category}/ files")
    ap.add_argument("--dataset", required=True, help="amazon, lazada or demo")
    ap.add_argument("--categories", nargs="+", required=True)
    ap.add_argument("--features", required=True, help="features root (mmss extract output)")
    ap.add_argument("--runs", required=True, help="runs root")
    ap.add_argument("--systems", nargs="+", default=["mmss"],
                    help="system names; mmss:VARIANT for an MM-SS ablation of model.ABLATIONS (e.g. mmss:wo_b)")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    ap.add_argument("--epochs", type=int, default=d.epochs)
    ap.add_argument("--patience", type=int, default=d.patience)
    ap.add_argument("--batch-size", type=int, default=d.batch_size)
    ap.add_argument("--lr", type=float, default=d.lr)
    ap.add_argument("--lr-text", type=float, default=d.lr_text)
    ap.add_argument("--pair-scheme", choices=("mcr", "all"), default=d.pair_scheme)
    ap.add_argument("--n-neg", type=int, default=d.n_neg)
    ap.add_argument("--loss", choices=("hinge", "label_gap"), default=d.loss)
    ap.add_argument("--margin", type=float, default=d.margin)
    ap.add_argument("--threshold", type=float, default=None, help="relevance threshold (default: per dataset)")
    ap.add_argument("--max-text-len", type=int, default=d.max_text_len)
    ap.add_argument("--device", default=d.device)
    ap.add_argument("--no-amp", action="store_true", help="no mixed precision on CUDA")
    ap.add_argument("--num-threads", type=int, default=None)
    ap.add_argument("--text-mode", choices=("cached", "frozen", "finetune"), default="cached",
                    help="cached: text feature stores; frozen / finetune: the encoder --text-model runs on "
                         "the fly (only region stores needed; finetune trains it at --lr-text for MM-SS)")
    ap.add_argument("--text-model", default=None, help="encoder of --text-mode frozen/finetune (HF name or folder)")
    ap.add_argument("--fine-tune-text", metavar="TEXT_MODEL", default=None,
                    help="fine-tune this text encoder end to end (MM-SS only)")
    ap.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                    help="model option for every system (repeatable; JSON values)")
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("--folds", type=int, default=0, metavar="K",
                    help="K-fold cross-validation over each category's pooled products (K >= 2; runs in "
                         "{system}/folds{K}/fold{f}/seed{n}/); 0 or 1: the released splits")
    ap.add_argument("--fold-seed", type=int, default=0, help="seed of the fold assignment (with --folds)")
    ap.add_argument("--dev-fraction", type=float, default=None,
                    help="share of each fold's non-test products used as its dev part (default 0.125)")
    ap.add_argument("--executor", choices=("local", "ray"), default="local",
                    help="local: this machine (--n-jobs worker processes); ray: every run a Ray task "
                         "(one GPU per run where the cluster has GPUs, else one CPU)")
    ap.add_argument("--n-jobs", type=int, default=1, help="runs at once with --executor local")
    ap.add_argument("--ray-address", default=None, metavar="ADDR",
                    help="Ray cluster (HOST:6379, ray://HOST:10001, auto; default: RAY_ADDRESS, else a "
                         "local Ray instance)")
    ap.add_argument("--ray-timeout", type=float, default=None, metavar="SECONDS",
                    help="seconds to wait for the Ray head at --ray-address before giving up (default 30)")
    return ap


def _check_args(args) -> None:
    """Values argparse lets through: one clear error naming the option and what it expects."""
    import math

    if args.dev_fraction is not None and not (math.isfinite(args.dev_fraction) and 0 < args.dev_fraction < 1):
        raise DataError(f"--dev-fraction {args.dev_fraction!r}: expected a share strictly between 0 and 1 "
                        "(e.g. 0.125: an eighth of each fold's non-test products is its dev part)")
    if args.dev_fraction is not None and args.folds < 2:
        raise DataError(f"--dev-fraction {args.dev_fraction!r} needs --folds K (K >= 2); the released splits "
                        "have their own dev split")
    if args.folds < 0:
        raise DataError(f"--folds {args.folds}: expected 0 or 1 (the released splits) or K >= 2")
    if args.num_threads is not None and args.num_threads < 1:
        raise DataError(f"--num-threads {args.num_threads}: expected an integer >= 1 (leave it out for torch's default)")
    if args.n_jobs < 1:
        raise DataError(f"--n-jobs {args.n_jobs}: expected an integer >= 1")
    if args.ray_timeout is not None and not (math.isfinite(args.ray_timeout) and args.ray_timeout > 0):
        raise DataError(f"--ray-timeout {args.ray_timeout!r}: expected a number of seconds > 0")
    for name in ("seeds", "categories", "systems"):
        values = list(getattr(args, name))
        twice = sorted({str(v) for v in values if values.count(v) > 1})
        if twice:
            raise DataError(f"--{name} {' '.join(map(str, values))}: {', '.join(twice)} given more than once "
                            "(one run folder trained twice, or one run counted twice in the mean); give each once")
    if any(s < 0 for s in args.seeds):
        raise DataError(f"--seeds {' '.join(map(str, args.seeds))}: expected integers >= 0")


def cli_main(argv: list[str], prog: str = "mmss train") -> int:
    args = build_parser(prog).parse_args(argv)
    _check_args(args)
    systems = []
    for s in args.systems:
        if ":" in s:
            name, variant = s.split(":", 1)
            from mmss_lib.model import ABLATIONS
            if variant not in ABLATIONS:
                raise DataError(f"--systems {s}: unknown MM-SS variant {variant!r}; known: {', '.join(ABLATIONS)}")
            systems.append((name, variant, dict(ABLATIONS[variant])))
        else:
            systems.append((s, "full", {}))
    cfg = TrainConfig(epochs=args.epochs, patience=args.patience, batch_size=args.batch_size, lr=args.lr,
                      lr_text=args.lr_text, pair_scheme=args.pair_scheme, n_neg=args.n_neg, loss=args.loss,
                      margin=args.margin, threshold=args.threshold, max_text_len=args.max_text_len,
                      device=args.device, amp=not args.no_amp, num_threads=args.num_threads,
                      fine_tune_text=bool(args.fine_tune_text), text_model=args.text_model or args.fine_tune_text,
                      text_mode=args.text_mode,
                      model_options=_parse_options(args.option))
    results = run_experiment(data_root=args.data_root, dataset=args.dataset, categories=args.categories,
                             features_root=args.features, runs_root=args.runs, systems=systems,
                             seeds=args.seeds, base_config=cfg, progress=not args.no_progress,
                             n_jobs=args.n_jobs, executor=args.executor, ray_address=args.ray_address,
                             folds=args.folds, fold_seed=args.fold_seed, dev_fraction=args.dev_fraction,
                             ray_timeout=args.ray_timeout)
    if results.attrs.get("summary_paths"):
        from mmss_lib.summary import format_summary, read_summaries

        print("Test metrics x100: mean over products [95% bootstrap interval]; vs: the best other system, "
              "p: paired t-test over products")
        print(format_summary(read_summaries(results)))
        for path in results.attrs.get("summary_paths", []):
            print(f"summary: {path}")
    if args.folds >= 2:
        return 0
    summary = summarize(results)
    cols = ["category", "system", "variant"] + [f"{m}_{s}" for m in METRIC_NAMES for s in ("mean", "std")] + ["n_seeds"]
    with_pd_opts = summary[cols].round(4).to_string(index=False)
    print(with_pd_opts)
    return 0
