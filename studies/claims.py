"""The claims study (``python -m studies.claims``; report: ``mmss reproduce --profile claims``): the
paper's claims asked again with every system tuned and trained until early stopping decides, as the training data grows, and with the images (or the texts) alone
carrying the label (issue "The claims asked again, tuned...").

It works in the folder of the powered study (``python -m studies.powered``) (default ``outputs/powered``) and reuses its data
and feature stores (made there when missing): the demo generator, electronics, 2,400 products
split 200 train / 100 dev / 2,100 test, generator seed 0, MiniLM token features at 64 tokens and
ImageNet MobileNetV2 grid-box region features.

Design (fixed before any result of it was seen):

- **Tuning** (phase ``tune``): one ``mmss tune`` study per system (BiMPM, MCR, MM-SS) on the
  powered train/dev split at image weight 0.6, the same budget for each: :data:`TUNE_TRIALS` = 6
  trials, :data:`TUNE_PARALLEL` = 2 at a time, each at most :data:`TUNE_EPOCHS` = 15 epochs with
  patience 3, the median pruner judging from epoch 4 (:data:`mmss_lib.model_selection.search.PRUNE_FROM`; MM-SS's
  subtask objective starts in epoch 3), sampler seed 0, the search spaces of
  :data:`mmss_lib.models.registry.SEARCH_SPACES`. Trial 0 is the powered benchmark's untuned setting (Adam
  1e-4, 3 negatives, batch 32, the systems' own dropout), so a study never chooses worse on dev.
  Trials never score test. The budget was set from the measured cost alone (about 1 CPU-minute per
  epoch at 200 training products, so the three studies take about 1.5 hours on 2 cores), before any
  trial ran.
- MM-SS uses the library's reading of Eq. 18 (:data:`mmss_lib.ssp.label.DEFAULT_SCALE`, "common",
  chosen on dev by the powered benchmark), not the "mean" its untuned runs were made with.
- **Final runs**: each system with its study's best settings (MM-SS w/o (b) and w/o (d) take
  MM-SS's: the usual ablation practice), at most :data:`FINAL_EPOCHS` = 40 epochs, patience 3:
  early stopping decides; a run that reaches 40 while its dev MAP still rises is flagged (↑).
  Test is scored once, at the best dev epoch. Two single-threaded runs at once.
  * ``tuned``: Random, Length, both ceilings, BiMPM, MCR, MM-SS, w/o (b), w/o (d); seeds 0, 1, 2.
    Compared with the untuned runs of the powered study (phase ``main``) where they are in the
    same folder.
  * ``alone``: the same systems without the ablations on two label designs, the generator
    otherwise unchanged (same texts, images, splits and feature stores): **images alone**
    (``text_weight`` 0, image weight 0.6: only the images and their agreement with the text carry
    the label; :mod:`mmss_lib.data.synthetic`, step 3) and **text alone** (image weight 0, the powered
    benchmark's ``w0`` data); seed 0 (intervals over the 2,100 test products).
  * ``size``: BiMPM, MCR, MM-SS and the floors and ceilings trained on 100, 400 and 800 products,
    with the same 100 dev products and the same test products. The extra training products come
    from the powered test split: its first :data:`SIZE_EXTRA` = 600 products by id move into train
    (400 = the powered train + 200 of them, 800 = + all 600; 100 = the first 100 powered training
    products by id). Every size's dataset holds all 2,400 products (what is not train or dev is
    test, so the feature stores' content fingerprints match), and the report compares the sizes on
    the 1,500 test products that no size trains on; the 200 point is phase ``tuned``'s runs scored
    on those 1,500 (seeds 0 and 1). Seeds 0 and 1 (0 only at 800).
- **Order** (a bare ``python -m studies.claims``; every run resumable, finished runs skipped): the
  studies, then one seed of every question (``tuned``, ``alone``, ``size``, ``magazine``), then the
  other seeds (:data:`PLAN`). The Magazine phase, the costliest (5 folds x 3 text lengths, a study per
  fold and system), comes after the generated-data questions (moved there from the measured cost of
  its untuned part, 2026-12-05, before any tuned run).
  A later run finishes what an earlier one could not: the results travel in git
  (the results of record, :mod:`studies.records`), so ``python -m studies.claims`` there
  continues them after rebuilding the data and features. Measured cost: see the report's time table;
  at these sizes one seed of MM-SS costs about 1 CPU-minute per epoch at 200 training products
  (linear in them), so the whole plan is several hours on 2 cores, more than one 3-hour session.
- **Report** (:func:`report`, ``--report-only``): the studies (base and chosen dev MAP, settings,
  CPU seconds), the tuned table (means with 95% bootstrap intervals over test products, runs at
  the ceiling), the paired differences that answer each claim, tuned and (where present) untuned,
  the headroom shares and cue sensitivity of every tuned run, the images-alone and text-alone
  tables against both ceilings, the data-size table (MM-SS - BiMPM with its paired interval per
  size) and figure; for MM-SS (seed 0) of the tuned and the images-alone runs, where its signal
  comes from (:mod:`studies.diagnose`: dev MAP with each interaction knocked out, gradient norms
  of the parts of the model); the measured wall time of every phase.

- **Fix** (phase ``fix``; designed 2026-12-06 after the images-alone diagnosis, before any run of
  it): a supervised bilinear probe on the frozen features separates the text-image agreement cue
  (``agree``) that the trained MM-SS hardly follows (:func:`studies.diagnose.cue_probes`), and the
  images-alone MM-SS fits its training pairs within a few epochs (best dev epoch 2). The one repair
  tried: :data:`FIX` = MM-SS with ``match_term`` (:class:`mmss_lib.models.mmss.Interaction`: each
  interaction also gets the elementwise product of its two sides' means, a direct multiplicative
  comparison), MM-SS's tuned settings, seed 0, on the images-alone data first, then the main data and
  text alone. The rule, fixed beforehand: it counts as a repair of the image pathway when it raises
  MM-SS's images-alone **dev** MAP; test is scored once and reported either way, as MM-SS+match -
  MM-SS with its paired interval. MM-SS itself stays as the paper describes (``match_term`` off).

Phase ``magazine`` (real text at 64/256/512 tokens, tuned inside each fold) is
:mod:`studies.magazine`. Choices are made on dev, never on test.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

from mmss_lib.evaluation.tables import plain_markdown
from studies import build_lock, check_counts, magazine
from studies import powered as P

TUNE_TRIALS = 6
TUNE_EPOCHS = 15
TUNE_PARALLEL = 2  # trials per batch: part of a study's budget, whatever --n-jobs runs them
FINAL_EPOCHS = 40
PATIENCE = 3
TUNED_SYSTEMS = ("bimpm", "mcr", "mmss")
SEEDS = (0, 1, 2)
SIZES = (100, 200, 400, 800)
BASE_SIZE = 200  # the powered train split: its size point is phase tuned's runs
SIZE_EXTRA = 600
SIZE_SEEDS = {100: (0, 1), 400: (0, 1), 800: (0,)}
ALONE = {"images_alone": dict(text_weight=0.0, image_weight=0.6), "text_alone": dict(text_weight=1.0, image_weight=0.0)}
AMAZON2018 = Path("../shared/data/amazon2018")  # the Magazine sample, beside the checkout
# a bare run: (phase, seeds); None = the phase's own seeds
PLAN = [
    ("tune", None),
    ("tuned", (0,)),
    ("alone", (0,)),
    ("fix", (0,)),
    ("size", (0,)),
    ("magazine", (0,)),
    ("tuned", (1, 2)),
    ("magazine", (1, 2)),
    ("size", (1,)),
]
FIX = ("mmss", "match", {"match_term": True})
FIX_CLAIMS = [
    ("MM-SS+match - MM-SS", ("mmss", "match"), ("mmss", "full")),
    ("MM-SS+match - BiMPM", ("mmss", "match"), ("bimpm", "full")),
]
FIX_DESIGNS = ("images_alone", "main", "text_alone")  # in this order
CLAIMS = [c for c in P.CLAIMS if c[0] not in ("MM-SS src1 - MM-SS",)] + FIX_CLAIMS


def tune_root(out: Path) -> Path:
    return out / "tune"


def runs_root(out: Path, tag: str) -> Path:
    return out / "runs_tuned" / tag


def alone_root(out: Path, name: str) -> Path:
    return P.data_root(out, 0.0) if name == "text_alone" else out / "data" / name


def size_root(out: Path, n: int) -> Path:
    return P.data_root(out, P.MAIN_WEIGHT) if n == BASE_SIZE else out / "data" / f"size{n}"


def final_config(**over):
    return P.current_config(epochs=FINAL_EPOCHS, patience=PATIENCE, **over)


# ------------------------------------------------------------------------------------ data


def _read_split(root: Path, kind: str, split: str) -> dict:
    from mmss_lib.data.mrhp import split_file

    return json.loads(split_file(root, "demo", P.CATEGORY, kind, split).read_text())


def size_design(src: Path) -> dict[str, list[str]]:
    """Product ids per split of every size (module docstring), from the powered split under
    ``src``: ``{"train{n}": [...], "test{n}": [...], "dev": [...], "common": [...]}``, ``common`` the
    test products of every size."""
    ids = {s: sorted(set(_read_split(src, "prd", s)["product_id"].values())) for s in ("train", "dev", "test")}
    every = set().union(*ids.values())
    extra = ids["test"][:SIZE_EXTRA]
    design = {"dev": ids["dev"], "common": ids["test"][SIZE_EXTRA:]}
    for n in SIZES:
        train = ids["train"][:n] if n <= len(ids["train"]) else ids["train"] + extra[: n - len(ids["train"])]
        if len(train) != n:
            raise ValueError(f"size {n}: only {len(train)} products available")
        design[f"train{n}"] = train
        design[f"test{n}"] = sorted(every - set(train) - set(ids["dev"]))
    return design


SIZE_DESIGN = "size_design.json"  # under runs_tuned/: what the size table compares (no data needed to report)


def size_design_path(out: Path) -> Path:
    return out / "runs_tuned" / SIZE_DESIGN


def record_size_design(out: Path, design: dict) -> None:
    """Write the size design the report reads (``sizes``, ``base_size``, ``common``: the test
    products no size trains on; generated-data product ids only), beside the runs it describes."""
    from mmss_lib.utils import atomic_write_json

    atomic_write_json(
        size_design_path(out), {"sizes": list(SIZES), "base_size": BASE_SIZE, "common": sorted(design["common"])}
    )


def read_size_design(out: Path) -> dict:
    """The recorded size design (:func:`record_size_design`); from the data where none is recorded."""
    path = size_design_path(out)
    if path.exists():
        d = json.loads(path.read_text(encoding="utf-8"))
        if not {"sizes", "base_size", "common"} <= set(d):
            from mmss_lib.errors import DataError

            raise DataError(f"{path}: expected the fields sizes, base_size, common (written by record_size_design)")
        return d
    return {
        "sizes": list(SIZES),
        "base_size": BASE_SIZE,
        "common": size_design(P.data_root(out, P.MAIN_WEIGHT))["common"],
    }


def make_data(out: Path) -> None:
    """The powered data (weights 0.6 and 0), the images-alone data and the size datasets."""
    from mmss_lib.data.synthetic import make_demo
    from mmss_lib.model_selection.folds import write_resplit
    from mmss_lib.utils import atomic_write_json

    P.make_data(out, (P.MAIN_WEIGHT, 0.0))
    root = alone_root(out, "images_alone")
    stamp = root / "demo" / "make_demo.json"
    if not (stamp.exists() and json.loads(stamp.read_text()).get("text_weight") == 0.0):
        make_demo(
            root,
            n_products=P.N_PRODUCTS,
            seed=0,
            categories=[P.CATEGORY],
            test_frac=P.TEST_FRAC,
            dev_frac=P.DEV_FRAC,
            **ALONE["images_alone"],
        )
    src = P.data_root(out, P.MAIN_WEIGHT)
    design = size_design(src)
    record_size_design(out, design)
    for n in SIZES:
        if n == BASE_SIZE:
            continue
        root = size_root(out, n)
        stamp = root / "demo" / "size_design.json"
        want = {"train": design[f"train{n}"], "dev": design["dev"], "test": design[f"test{n}"]}
        if stamp.exists() and json.loads(stamp.read_text()) == want:
            continue
        write_resplit(src, root, "demo", P.CATEGORY, want)
        atomic_write_json(stamp, want)


# ------------------------------------------------------------------------------------ phases


def run_tune(out: Path, n_jobs: int) -> dict:
    from mmss_lib.model_selection.search import tune

    return {
        s: tune(
            data_root=P.data_root(out, P.MAIN_WEIGHT),
            dataset="demo",
            category=P.CATEGORY,
            features_root=out / "features",
            tune_root=tune_root(out),
            system=s,
            base_config=P.current_config(epochs=TUNE_EPOCHS, patience=PATIENCE),
            n_trials=TUNE_TRIALS,
            parallel=TUNE_PARALLEL,
            n_jobs=n_jobs,
            seed=0,
            progress=True,
        )
        for s in TUNED_SYSTEMS
    }


def _run(out: Path, data: Path, tag: str, systems, seeds, n_jobs: int):
    from mmss_lib.model_selection.sweeps import run_experiment

    return run_experiment(
        data_root=data,
        dataset="demo",
        categories=[P.CATEGORY],
        features_root=out / "features",
        runs_root=runs_root(out, tag),
        systems=systems,
        seeds=seeds,
        base_config=final_config(),
        progress=True,
        n_jobs=n_jobs,
        summary=False,
        tuned=tune_root(out),
        tuned_transfer=True,  # the studies tuned on the main data serve every design of the study
    )


def run_phase(
    out: Path,
    phase: str,
    seeds: Sequence[int] | None,
    n_jobs: int,
    amazon2018: Path = AMAZON2018,
    folds: Sequence[int] | None = None,
) -> None:
    from mmss_lib.models.mmss import ABLATIONS

    base = P.FLOORS_AND_CEILINGS + list(TUNED_SYSTEMS)
    if phase == "tune":
        run_tune(out, n_jobs)
    elif phase == "tuned":
        systems = base + [("mmss", "wo_b", ABLATIONS["wo_b"]), ("mmss", "wo_d", ABLATIONS["wo_d"])]
        _run(out, P.data_root(out, P.MAIN_WEIGHT), "main", systems, seeds or SEEDS, n_jobs)
    elif phase == "alone":
        for name in ALONE:
            _run(out, alone_root(out, name), name, base, seeds or (0,), n_jobs)
    elif phase == "fix":
        for tag in FIX_DESIGNS:
            data = P.data_root(out, P.MAIN_WEIGHT) if tag == "main" else alone_root(out, tag)
            _run(out, data, tag, [FIX], seeds or (0,), n_jobs)
    elif phase == "size":
        for n, own in SIZE_SEEDS.items():
            todo = [s for s in (seeds or own) if s in own]
            if todo:
                _run(out, size_root(out, n), f"size{n}", base, todo, n_jobs)
    elif phase == "magazine":
        magazine.run(out, amazon2018, n_jobs, seeds=seeds or magazine.SEEDS, folds=folds)
    else:
        raise ValueError(f"unknown phase {phase!r}")


# ------------------------------------------------------------------------------------ report


def finished(out: Path, tag: str):
    from mmss_lib.training.run_folder import finished_results

    return finished_results(runs_root(out, tag), "demo", P.CATEGORY)


def studies_table(out: Path):
    import pandas as pd

    from mmss_lib.model_selection.tuned import BEST_FILE
    from mmss_lib.training.run_folder import study_dir_for

    rows = []
    for s in TUNED_SYSTEMS:
        path = study_dir_for(tune_root(out), "demo", P.CATEGORY, s) / BEST_FILE
        if path.exists():
            b = json.loads(path.read_text())
            rows.append(
                {
                    "system": s,
                    "trials": b["n_trials"],
                    "complete": b["n_complete"],
                    "pruned": b["n_pruned"],
                    "base_dev_MAP": 100 * b["base_dev_MAP"],
                    "tuned_dev_MAP": 100 * b["dev_MAP"],
                    "best_trial": b["trial"],
                    "cpu_seconds": b["cpu_seconds"],
                    "params": json.dumps(b["params"]),
                }
            )
    return pd.DataFrame(rows)


def size_curve(out: Path):
    """Per training size: each system's MAP and MM-SS - BiMPM (and MCR - BiMPM) with the paired
    interval, over the test products common to every size."""
    import pandas as pd

    from mmss_lib.evaluation.summary import paired_differences, pooled_per_product

    if not size_design_path(out).exists() and not P.data_root(out, P.MAIN_WEIGHT).exists():
        return pd.DataFrame()  # neither the recorded design nor the data: no size run can have finished
    design = read_size_design(out)
    common, base = set(design["common"]), int(design["base_size"])
    rows = []
    for n in design["sizes"]:
        res = finished(out, "main" if n == base else f"size{n}")
        if res.empty:
            continue
        res = res[res["variant"] == "full"]
        if n == base:
            res = res[res["seed"].isin(max(SIZE_SEEDS.values(), key=len))]  # the seeds the other sizes have
        pooled = pooled_per_product(res)
        pooled = pooled[pooled["product_id"].isin(common)]
        means = pooled.groupby("system")["AP"].mean() * 100
        comps = [
            ("MM-SS - BiMPM", ("mmss", "full"), ("bimpm", "full")),
            ("MCR - BiMPM", ("mcr", "full"), ("bimpm", "full")),
            ("ceiling_all - BiMPM", ("ceiling_all", "full"), ("bimpm", "full")),
        ]
        d = paired_differences(pooled, comps)
        seeds = res.groupby("system")["seed"].nunique()
        row = {
            "train_products": n,
            **{f"MAP_{s}": means.get(s) for s in ("bimpm", "mcr", "mmss", "length", "ceiling_text", "ceiling_all")},
            "n_seeds_mmss": int(seeds.get("mmss", 0)),
            "n_seeds_bimpm": int(seeds.get("bimpm", 0)),
            "runs_at_ceiling": int(
                res.get("ceiling_while_improving", pd.Series(dtype=float)).fillna(0).astype(bool).sum()
            ),
        }
        for r in d.itertuples(index=False):
            row.update({f"{r.comparison}": r.diff, f"{r.comparison} lo": r.lo, f"{r.comparison} hi": r.hi})
        row["n_products"] = int(pooled["product_id"].nunique())
        rows.append(row)
    return pd.DataFrame(rows)


def plot_size_curve(curve, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mmss_lib.utils import atomic_path

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for s, label in (
        ("bimpm", "BiMPM"),
        ("mcr", "MCR"),
        ("mmss", "MM-SS"),
        ("ceiling_all", "ceiling (all cues)"),
        ("length", "Length"),
    ):
        col = f"MAP_{s}"
        if col in curve and curve[col].notna().any():
            axes[0].plot(
                curve["train_products"],
                curve[col],
                marker="o",
                label=label,
                ls="--" if s in ("ceiling_all", "length") else "-",
            )
    axes[0].set_ylabel("test MAP x100")
    axes[0].legend(fontsize=8)
    for comp in ("MM-SS - BiMPM", "MCR - BiMPM"):
        if comp in curve:
            g = curve.dropna(subset=[comp])
            axes[1].errorbar(
                g["train_products"],
                g[comp],
                yerr=[g[comp] - g[f"{comp} lo"], g[f"{comp} hi"] - g[comp]],
                marker="o",
                capsize=3,
                label=comp,
            )
    axes[1].axhline(0.0, color="grey", lw=0.8)
    axes[1].set_ylabel("paired difference, MAP x100 (95% CI)")
    axes[1].legend(fontsize=8)
    for ax in axes:  # the sizes themselves as ticks, on a log axis
        ax.set_xscale("log", base=2)
        ax.set_xticks(list(curve["train_products"]), [str(n) for n in curve["train_products"]])
        ax.minorticks_off()
        ax.set_xlabel("training products")
    n = int(curve["n_products"].max()) if len(curve) else 0
    fig.suptitle(f"Data size ({P.CATEGORY}, tuned settings, {n} common test products)")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)


def _comparison(res, claims, title: str, tables: Path, tag: str, data: Path) -> list[str]:
    from mmss_lib.evaluation.cue_sensitivity import format_cue_sensitivity, write_cue_sensitivity
    from mmss_lib.evaluation.summary import (
        format_summary,
        headroom_shares,
        paired_differences,
        pooled_per_product,
        product_summary,
    )

    pooled = pooled_per_product(res)
    summ = product_summary(pooled)
    claims_df = paired_differences(pooled, claims)
    shares = headroom_shares(pooled)
    cs = write_cue_sensitivity(res, data, tables, f"claims_{tag}")
    for name, df in (("summary", summ), ("claims", claims_df), ("headroom", shares)):
        df.to_csv(tables / f"claims_{tag}_{name}.csv", index=False)
    return [
        f"## {title} (test products: {int(summ['n_products'].max())}; seeds per system: "
        f"{res.groupby('variant')['seed'].nunique().max()})",
        "",
        format_summary(summ),
        "",
        "### Paired differences (MAP x100; per-product AP averaged over seeds; 95% paired bootstrap interval; "
        "paired t-test)",
        "",
        plain_markdown(claims_df, decimals=2),
        "",
        "### Share of the headroom (system - ceiling_text) / (ceiling_all - ceiling_text)",
        "",
        plain_markdown(shares, decimals=2),
        "",
        "### Cue sensitivity (test scores z-scored within product on the planted cues)",
        "",
        plain_markdown(format_cue_sensitivity(cs), decimals=2),
        "",
    ]


def fix_table(out: Path):
    """Phase ``fix``: per data design, MM-SS and MM-SS+match (seed 0) on dev (the choice) and test."""
    import pandas as pd

    rows = []
    for tag in FIX_DESIGNS:
        res = finished(out, tag)
        if res.empty:
            continue
        res = res[(res["system"] == "mmss") & (res["seed"] == 0)].set_index("variant")
        if not {"full", "match"} <= set(res.index):
            continue
        row = {"data": tag}
        for v, name in (("full", "MM-SS"), ("match", "MM-SS+match")):
            row.update(
                {
                    f"{name} dev MAP": 100 * res.at[v, "dev_MAP"],
                    f"{name} best epoch": int(res.at[v, "best_epoch"]),
                    f"{name} test MAP": 100 * res.at[v, "MAP"],
                }
            )
        row["dev gain"] = row["MM-SS+match dev MAP"] - row["MM-SS dev MAP"]
        rows.append(row)
    return pd.DataFrame(rows)


def fix_lines(out: Path, tables: Path) -> list[str]:
    df = fix_table(out)
    if df.empty:
        return []
    df.to_csv(tables / "claims_fix.csv", index=False)
    img = df[df["data"] == "images_alone"]
    verdict = (
        ""
        if img.empty
        else "By the rule fixed beforehand (images-alone dev MAP), the match term "
        + ("repairs" if float(img["dev gain"].iloc[0]) > 0 else "does not repair")
        + " the image pathway. "
    )
    return [
        "## Fix tried for the image pathway (phase fix: MM-SS+match, seed 0; chosen on dev)",
        "",
        plain_markdown(df, decimals=2),
        "",
        verdict + "The test differences MM-SS+match - MM-SS and MM-SS+match - BiMPM with their paired intervals "
        "are in each design's table of paired differences above.",
        "",
    ]


def diagnosis(out: Path, tables: Path, tag: str, data: Path) -> list[str]:
    """Issue question 3: where MM-SS (seed 0) of the runs ``tag`` takes its signal from, on dev
    (:mod:`studies.diagnose`: interaction knock-out, gradient norms); computed once per trained
    run (cached beside the tables, and read from there where the run's checkpoint is gone)."""
    import pandas as pd

    from mmss_lib.errors import DataError
    from mmss_lib.training.run_folder import BEST, HISTORY, METRICS, run_dir_for
    from studies.diagnose import gradient_norms, interaction_knockout

    run = run_dir_for(runs_root(out, tag), "demo", P.CATEGORY, "mmss", "full", 0)
    if not (run / METRICS).exists():
        return []
    lines = []
    for name, fn in (
        ("knockout", lambda: interaction_knockout(run, data, out / "features", split="dev")),
        ("gradients", lambda: gradient_norms(run, data, out / "features")),
    ):
        path = tables / f"claims_{tag}_diagnosis_{name}.csv"
        best = run / BEST  # absent where the results were carried without checkpoints (outputs/powered in git)
        if path.exists() and (not best.exists() or path.stat().st_mtime >= best.stat().st_mtime):
            df = pd.read_csv(path)
        else:
            df = fn()
            df.to_csv(path, index=False)
        lines += [
            f"MM-SS seed 0, {'dev MAP with each interaction replaced by its mean (drop x100)' if name == 'knockout' else 'target-loss gradient norms on 4 training batches'}:",
            "",
            plain_markdown(df, decimals=4),
            "",
        ]
    hist = json.loads((run / HISTORY).read_text())
    curve = pd.DataFrame(
        [
            {
                "epoch": e["epoch"],
                "train target loss": e["loss_tar"],
                "train subtask loss": e["loss_sub"],
                "dev MAP": 100 * e["dev"]["MAP"],
            }
            for e in hist
            if isinstance(e.get("dev"), dict)
        ]
    )
    lines += [
        "MM-SS seed 0, training curve (target loss on the training pairs, Eq. 12; dev MAP x100):",
        "",
        plain_markdown(curve, decimals=4),
        "",
    ]
    if tag == "images_alone":
        from studies.diagnose import cue_probes

        path = tables / f"claims_{tag}_diagnosis_probes.csv"
        title = "Do the frozen features hold the image cues? (studies.diagnose.cue_probes; ROC AUC on dev reviews with images)"
        if path.exists():
            probes = pd.read_csv(path)
        else:
            try:
                probes = cue_probes(data, out / "features", category=P.CATEGORY, split="dev")
            except DataError as e:  # e.g. too few reviews with images for a probe: recorded as such
                probes = pd.DataFrame({"no_probe": [str(e)]})
            probes.to_csv(path, index=False)
        if "no_probe" in probes.columns:
            lines += [title, "", f"No probe: {probes['no_probe'].iloc[0]}", ""]
        else:
            lines += [title, "", plain_markdown(probes, decimals=3), ""]
    return [f"### Where MM-SS takes its signal from ({tag.replace('_', ' ')})", ""] + lines


def report_dirs(out: Path) -> tuple[Path, Path]:
    """``{out}/tables`` and ``{out}/figures``, made when missing."""
    tables, figures = out / "tables", out / "figures"
    tables.mkdir(parents=True, exist_ok=True)
    figures.mkdir(parents=True, exist_ok=True)
    return tables, figures


def studies_lines(out: Path, tables: Path) -> list[str]:
    """The studies: what each system's study chose, its budget read from the studies' records."""
    st = studies_table(out)
    if st.empty:
        return []
    st.to_csv(tables / "claims_studies.csv", index=False)
    budgets = []
    for s in st["system"]:
        from mmss_lib.model_selection.tuned import BEST_FILE
        from mmss_lib.training.run_folder import study_dir_for

        b = json.loads((study_dir_for(tune_root(out), "demo", P.CATEGORY, s) / BEST_FILE).read_text())["budget"]
        budgets.append((b["trials"], b["epochs"]))
    trials, epochs = budgets[0] if len(set(budgets)) == 1 else (TUNE_TRIALS, TUNE_EPOCHS)
    return [
        f"## Studies ({trials} trials each, at most {epochs} epochs, dev MAP x100)",
        "",
        plain_markdown(st, decimals=2),
        "",
    ]


def tuned_lines(out: Path, tables: Path) -> list[str]:
    """The tuned comparison at image weight 0.6, where MM-SS takes its signal from, and (where the
    untuned runs of the powered study are in the folder) the same differences untuned."""
    res = finished(out, "main")
    if res.empty:
        return []
    data = P.data_root(out, P.MAIN_WEIGHT)
    lines = _comparison(res, CLAIMS, "Tuned comparison (image weight 0.6)", tables, "tuned", data)
    lines += diagnosis(out, tables, "main", data)
    old = P.finished_results(out, P.MAIN_WEIGHT)
    old = old[old["variant"].isin(["full", "wo_b", "wo_d"])] if not old.empty else old
    if not old.empty:
        from mmss_lib.evaluation.summary import paired_differences, pooled_per_product

        d = paired_differences(pooled_per_product(old), CLAIMS)
        lines += [
            "### The same differences untuned (mmss bench powered, phase main: at most 10 epochs)",
            "",
            plain_markdown(d, decimals=2),
            "",
        ]
    return lines


def alone_lines(out: Path, tables: Path, name: str) -> list[str]:
    """One label design of phase ``alone`` (``images_alone`` or ``text_alone``): its comparison
    against both ceilings and where MM-SS takes its signal from."""
    spec = ALONE[name]
    r = finished(out, name)
    if r.empty:
        return []
    comps = (
        [(f"{s} - ceiling_{c}", (s, "full"), (f"ceiling_{c}", "full")) for s in TUNED_SYSTEMS for c in ("text", "all")]
        + [("MM-SS - BiMPM", ("mmss", "full"), ("bimpm", "full"))]
        + FIX_CLAIMS
    )
    lines = _comparison(
        r,
        comps,
        f"{name.replace('_', ' ').capitalize()} (text weight {spec['text_weight']:g}, image weight {spec['image_weight']:g})",
        tables,
        name,
        alone_root(out, name),
    )
    return lines + diagnosis(out, tables, name, alone_root(out, name))


def size_lines(out: Path, tables: Path, figures: Path) -> list[str]:
    """The data-size table and figure."""
    curve = size_curve(out)
    if curve.empty:
        return []
    curve.to_csv(tables / "claims_size.csv", index=False)
    plot_size_curve(curve, figures / "claims_size.png")
    return [
        "## Data size (tuned settings; MAP x100 over the test products common to every size)",
        "",
        plain_markdown(curve, decimals=2),
        "",
        f"Figure: {P.shown(figures / 'claims_size.png')}",
        "",
    ]


def time_lines(out: Path) -> list[str]:
    from mmss_lib.bench.common import timing_lines

    return timing_lines(out / "claims_timing.json")


HEADER = ["# mmss bench claims", ""]


def write_report(out: Path, lines: list[str]) -> str:
    """Write ``{out}/CLAIMS.md`` from the sections' lines; return the text."""
    from mmss_lib.utils import atomic_write_text

    text = "\n".join(lines)
    atomic_write_text(out / "CLAIMS.md", text + "\n")
    return text


def report(out: Path) -> str:
    """Write every table and figure of the study from what has finished, and CLAIMS.md; return the
    text. The report notebook (studies/notebooks/claims.ipynb) makes the same calls, one section a cell."""
    tables, figures = report_dirs(out)
    lines = list(HEADER)
    lines += studies_lines(out, tables)
    lines += tuned_lines(out, tables)
    for name in ALONE:
        lines += alone_lines(out, tables, name)
    lines += fix_lines(out, tables)
    lines += size_lines(out, tables, figures)
    lines += magazine.report_lines(out, tables)
    lines += time_lines(out)
    return write_report(out, lines)


def main(argv: list[str], prog: str = "python -m studies.claims") -> int:
    """The claims asked again: every system tuned, trained to convergence, as data grows, images alone."""
    from mmss_lib.bench.common import phase_timer
    from mmss_lib.errors import DataError

    ap = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="outputs/powered", help="the powered benchmark's folder (default %(default)s)")
    ap.add_argument(
        "--amazon2018",
        default=str(AMAZON2018),
        help="folder of the Amazon 2018 Magazine sample (phase magazine; default %(default)s)",
    )
    ap.add_argument(
        "--phases",
        nargs="+",
        choices=["tune", "tuned", "alone", "fix", "size", "magazine"],
        default=None,
        help="run these phases only (default: the whole plan, in its order)",
    )
    ap.add_argument("--seeds", nargs="+", type=int, default=None, help="with --phases: these seeds only")
    ap.add_argument(
        "--folds",
        nargs="+",
        type=int,
        default=None,
        help="with --phases magazine: these of its "
        f"folds only (0-{magazine.K - 1}), so that several processes share the phase",
    )
    ap.add_argument("--n-jobs", type=int, default=2)
    ap.add_argument("--report-only", action="store_true", help="only write the report from finished runs")
    a = ap.parse_args(argv)
    out = Path(a.out)
    if a.report_only:
        studies = tune_root(out).is_dir() and any(tune_root(out).rglob("best.json"))
        if not (out / "runs_tuned").is_dir() and not studies:
            raise DataError(f"--out {out}: no studies or runs of the claims study there; nothing to report")
        print(report(out))
        return 0
    if out.exists() and not out.is_dir():
        raise DataError(f"--out {out}: a file, not a folder")
    if a.n_jobs < 1:
        raise DataError(f"--n-jobs {a.n_jobs}: expected an integer >= 1")
    if a.folds is not None and a.phases != ["magazine"]:
        raise DataError(f"--folds {' '.join(map(str, a.folds))}: only with --phases magazine (the folds are its own)")
    check_counts(a.folds, "--folds", high=magazine.K - 1)  # before the 20-minute data and feature build
    check_counts(a.seeds, "--seeds")
    if a.seeds is not None and not a.phases:
        raise DataError(f"--seeds {' '.join(map(str, a.seeds))}: only with --phases (the plan gives its own seeds)")
    out.mkdir(parents=True, exist_ok=True)
    plan = [(p, a.seeds) for p in a.phases] if a.phases else PLAN
    timed = phase_timer(out / "claims_timing.json", "claims")
    with build_lock(out):  # a second process on this folder waits, then finds them built
        timed("data", lambda: make_data(out))
        timed("features", lambda: P.extract(out))
    for phase, seeds in plan:
        name = phase if seeds is None else f"{phase} seeds {' '.join(map(str, seeds))}"
        name += "" if a.folds is None else f" folds {' '.join(map(str, a.folds))}"
        timed(
            name,
            lambda phase=phase, seeds=seeds: run_phase(out, phase, seeds, a.n_jobs, Path(a.amazon2018), folds=a.folds),
        )
        report(out)
    print(report(out))
    return 0


if __name__ == "__main__":
    from studies import run_main

    raise SystemExit(run_main(main, "python -m studies.claims"))
