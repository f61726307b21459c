"""The pseudo-label explorer's widgets (ipywidgets): the views over :mod:`mmss_lib.explore.explorer` that
JupyterLab (notebook ``05_explore``) and the web app (``mmss explore``, Voila) show.

Layout: pickers for dataset, category, run, a second run and split; a product list with a search
box and an order (file order, the run's AP, the largest offsets, most reviews); the product's text
and images; its reviews as a table ranked by the run beside the human order (and the second run's
ranks, rows where they differ tinted), a minimum-offset filter, and a review list; the selected
review's pseudo-label trajectory, offsets, distances, heads and cues. Every callback runs under
one guard: a :class:`~mmss_lib.errors.MMSSError` or any other exception becomes a sentence in the
message area, never a traceback. Nothing is written anywhere.

``ipywidgets`` is imported when an :class:`ExplorerApp` is built (``import mmss_lib`` stays light).
CSS classes ``mmss-*`` name the parts for the browser test.

``mmss explore`` serves the app with a Voila child process on 127.0.0.1 from a temporary notebook
folder. ``--port 0`` takes a free port and prints its real address. Ctrl-C or SIGTERM (``kill
PID``, a service manager) stops the Voila server and its kernels and removes the temporary folder
(SIGTERM alone used to kill only the parent, leaving Voila serving). A ``kill -9`` of ``mmss
explore`` does too: Voila runs under a supervisor that dies with its parent
(:mod:`mmss_lib.explore.serve`). The server checks the Host header (127.0.0.1, ::1 or localhost
only): a page served under another name, as DNS rebinding does, is refused with 403. It asks for a
token, printed in the URL as Jupyter does (``--no-token``: none), so other local users cannot read
the runs.
"""

from __future__ import annotations

import os
from html import escape

from mmss_lib.errors import MMSSError
from mmss_lib.explore.explorer import (
    SORTS,
    SPLITS,
    Explorer,
    data_uri,
    product_html,
    review_detail_html,
    review_table_html,
    trajectory_png,
)

PRODUCT_LIMIT = 500  # products listed at once (refine the search for the others)


class ExplorerApp:
    """The explorer over one runs folder; ``.widget`` is the whole view, :meth:`show` displays it,
    :meth:`snapshot_html` is the static HTML of what it shows (the notebook's papermill output).

    The keyword arguments preselect what is shown first (a missing one falls back to the first
    choice): ``dataset``, ``category``, ``run`` / ``other`` (folder names ``mmss``,
    ``mmss__wo_d``, with ``seed``), ``split``, ``product`` and ``review`` ids, ``sort``.
    """

    def __init__(
        self,
        runs_root: str | os.PathLike,
        data_root: str | os.PathLike | None = None,
        *,
        dataset: str | None = None,
        category: str | None = None,
        run: str | None = None,
        other: str | None = None,
        seed: int | None = None,
        split: str = "test",
        product: str | None = None,
        review: str | None = None,
        sort: str = "file order",
    ):
        import ipywidgets as W

        self.explorer = Explorer(runs_root, data_root)
        self._want = {
            "dataset": dataset,
            "category": category,
            "run": run,
            "other": other,
            "seed": seed,
            "product": product,
            "review": review,
        }
        self._quiet = 0  # > 0 while options are set programmatically
        self._notes: list[str] = []
        self._error: str | None = None
        self._table = None

        def dd(description, **kw):
            return W.Dropdown(description=description, layout=W.Layout(width="auto"), **kw)

        self.dataset = dd("dataset")
        self.category = dd("category")
        self.run = dd("run")
        self.other = dd("beside")
        self.split = dd("split", options=list(SPLITS), value=split if split in SPLITS else "test")
        self.refresh = W.Button(description="reload runs", tooltip="read the runs folder again")
        self.search = W.Text(
            placeholder="search products (id, name, text)", continuous_update=False, layout=W.Layout(width="26em")
        )
        self.sort = dd("order", options=list(SORTS), value=sort if sort in SORTS else "file order")
        self.products = W.Select(rows=16, layout=W.Layout(width="26em"))
        self.count = W.HTML()
        self.min_offset = W.FloatSlider(
            value=0.0,
            min=0.0,
            max=3.0,
            step=0.05,
            readout_format=".2f",
            description="min |offset|",
            continuous_update=False,
            layout=W.Layout(width="26em"),
        )
        self.product = W.HTML()
        self.summary = W.HTML()
        self.table = W.HTML()
        self.reviews = W.Select(rows=8, layout=W.Layout(width="26em"))
        self.detail = W.HTML()
        self.trajectory = W.HTML()
        self.message = W.HTML()
        for w, cls in (
            (self.dataset, "dataset"),
            (self.category, "category"),
            (self.run, "run"),
            (self.other, "other"),
            (self.split, "split"),
            (self.search, "search"),
            (self.sort, "sort"),
            (self.products, "products"),
            (self.reviews, "reviews"),
            (self.product, "product-view"),
            (self.table, "table"),
            (self.summary, "summary"),
            (self.detail, "detail"),
            (self.trajectory, "trajectory"),
            (self.message, "message"),
            (self.min_offset, "min-offset"),
            (self.refresh, "refresh"),
        ):
            w.add_class(f"mmss-{cls}")
        left = W.VBox(
            [
                self.search,
                self.sort,
                self.count,
                self.products,
                self.min_offset,
                W.HTML("<b>reviews</b> (click one)"),
                self.reviews,
            ],
            layout=W.Layout(flex="0 0 27em", min_width="27em"),
        )
        right = W.VBox(
            [self.product, self.summary, self.table, self.detail, self.trajectory], layout=W.Layout(flex="1 1 auto")
        )
        self.widget = W.VBox(
            [
                W.HTML("<h3>mmss · pseudo-label explorer</h3>"),
                W.HBox([self.dataset, self.category, self.split]),
                W.HBox([self.run, self.other, self.refresh]),
                self.message,
                W.HBox([left, right]),
            ]
        )
        self.widget.add_class("mmss-explorer")

        for w, fn in (
            (self.dataset, self._fill_categories),
            (self.category, self._fill_runs),
            (self.run, self._fill_products),
            (self.other, self._fill_products),
            (self.split, self._fill_products),
            (self.search, self._fill_products),
            (self.sort, self._fill_products),
            (self.products, self._show_product),
            (self.min_offset, self._show_product),
            (self.reviews, self._show_review),
        ):
            w.observe(self._handler(fn), names="value")
        self.refresh.on_click(lambda _: self._act(self._reload))
        self._act(self._fill_datasets)

    # ---------------------------------------------------------------- plumbing
    def show(self):
        from IPython.display import display

        display(self.widget)

    def _handler(self, fn):
        def on_change(change):
            if not self._quiet:
                self._act(fn)

        return on_change

    def _act(self, fn) -> None:
        """Run one user action: its notes and any error end up in the message area."""
        self._notes, self._error = [], None
        try:
            fn()
        except MMSSError as exc:
            self._error = str(exc)
            self._clear_views()
        except Exception as exc:  # noqa: BLE001 - a view shows a sentence, never a traceback
            self._error = f"unexpected {type(exc).__name__}: {exc}"
            self._clear_views()
        parts = []
        if self._error:
            parts.append(f'<div class="mmss-error" style="color:#a00">&#9888; {escape(self._error)}</div>')
        parts += [f'<div class="mmss-note" style="color:#555">{escape(n)}</div>' for n in dict.fromkeys(self._notes)]
        self.message.value = "".join(parts)

    def _set(self, widget, options, value=None) -> None:
        """Set options (and a value) without firing the observers."""
        self._quiet += 1
        try:
            widget.options = options
            values = [o[1] if isinstance(o, tuple) else o for o in options]
            if values:
                widget.value = value if value in values else values[0]
            else:
                widget.value = None
        finally:
            self._quiet -= 1

    def _clear_views(self) -> None:
        self._quiet += 1
        try:
            for w in (self.product, self.summary, self.table, self.detail, self.trajectory):
                w.value = ""
        finally:
            self._quiet -= 1

    @property
    def _where(self):
        return self.dataset.value, self.category.value, self.split.value

    # ---------------------------------------------------------------- the chain of views
    def _reload(self) -> None:
        self.explorer.refresh()
        self._fill_datasets()

    def _fill_datasets(self) -> None:
        try:
            datasets = self.explorer.datasets()
        except MMSSError:
            for w in (self.dataset, self.category, self.run, self.other, self.products, self.reviews):
                self._set(w, [])
            raise
        self._set(self.dataset, datasets, self._want.pop("dataset", None) or self.dataset.value)
        self._fill_categories()

    def _fill_categories(self) -> None:
        cats = self.explorer.categories(self.dataset.value)
        self._set(self.category, cats, self._want.pop("category", None) or self.category.value)
        self._fill_runs()

    def _fill_runs(self) -> None:
        runs = self.explorer.runs(self.dataset.value, self.category.value)
        seed = self._want.pop("seed", None)

        def pick(name, current):
            hits = [r for r in runs if r.name == name and (seed is None or r.seed == int(seed))]
            return hits[0] if hits else current

        first = next((r for r in runs if r.name == "mmss"), runs[0] if runs else None)
        self._set(
            self.run,
            [(r.label, r) for r in runs],
            pick(self._want.pop("run", None), self.run.value if self.run.value in runs else first),
        )
        self._set(
            self.other,
            [("(none)", None)] + [(r.label, r) for r in runs],
            pick(self._want.pop("other", None), self.other.value if self.other.value in runs else None),
        )
        self._fill_products()

    def _fill_products(self) -> None:
        ds, cat, split = self._where
        run, other = self.run.value, self.other.value
        for r in (run, other):
            if r is not None:
                st = self.explorer.run_status(r)
                self._notes += [n for n in st.notes if split == "train" or "SSP-Label" not in n]
        prods, notes = self.explorer.product_list(ds, cat, split, run, query=self.search.value, sort=self.sort.value)
        self._notes += notes
        total = len(prods)
        shown = prods.head(PRODUCT_LIMIT)

        def label(pid, name, n, ap, off):
            extra = ([f"AP {ap:.2f}"] if ap == ap else []) + ([f"offset {off:.2f}"] if off == off else [])
            return f"{name} · {n} rev" + "".join(f" · {e}" for e in extra) + f" · {pid}"

        options = [
            (label(*row), row[0])
            for row in zip(
                shown["product_id"],
                shown["name"],
                shown["n_reviews"],
                shown["AP"].to_numpy(dtype=float),
                shown["offset"].to_numpy(dtype=float),
                strict=True,
            )
        ]
        self.count.value = (
            f"{total} product(s)"
            + (f", the first {PRODUCT_LIMIT} listed: refine the search" if total > PRODUCT_LIMIT else "")
            if total
            else "<i>no product matches</i>"
        )
        self._set(self.products, options, self._want.pop("product", None) or self.products.value)
        self._show_product()

    def _show_product(self) -> None:
        ds, cat, split = self._where
        pid = self.products.value
        if pid is None:
            self._clear_views()
            self._set(self.reviews, [])
            return
        self.product.value = product_html(self.explorer.product(ds, cat, split, pid))
        table, notes = self.explorer.review_table(
            ds, cat, split, pid, self.run.value, self.other.value, min_offset=self.min_offset.value
        )
        self._notes += notes
        self._table = table
        diff = self.explorer.ranking_difference(table)
        if diff is not None:
            self.summary.value = (
                f'<div class="mmss-compare">{escape(self.run.value.label)} vs '
                f"{escape(self.other.value.label)}: ranks differ at {diff['differ']} of {diff['n']} "
                f"reviews (tinted), Kendall τ = {diff['kendall_tau']:.2f}, "
                f"{'same' if diff['top_same'] else 'different'} first review</div>"
            )
        else:
            self.summary.value = ""

        def label(r):
            rank = f"#{int(r['rank'])}" if r["rank"] == r["rank"] else f"h{int(r['human_rank'])}"
            off = f" · offset {r['offset']:.2f}" if r["offset"] == r["offset"] else ""
            return f"{rank} {r['review_id']} · H={int(r['label'])}{off}"

        self._set(
            self.reviews,
            [(label(r), r["review_id"]) for _, r in table.iterrows()],
            self._want.pop("review", None) or self.reviews.value,
        )
        self._show_review()

    def _show_review(self) -> None:
        ds, cat, split = self._where
        rid = self.reviews.value
        other = self.other.value.label if self.other.value is not None else None
        if self._table is not None:
            self.table.value = review_table_html(self._table, selected=rid, other_label=other, split=split)
        if rid is None:
            self.detail.value = self.trajectory.value = ""
            return
        det = self.explorer.review_detail(ds, cat, split, rid, self.run.value)
        self.detail.value = f'<div class="mmss-review">{review_detail_html(det)}</div>'
        png = trajectory_png(det)
        self.trajectory.value = (
            ""
            if png is None
            else f'<img class="mmss-trajectory-img" alt="trajectory of review {escape(rid)}" '
            f'data-review="{escape(rid)}" src="{data_uri(png)}">'
        )

    def select(
        self,
        *,
        split: str | None = None,
        sort: str | None = None,
        run: str | None = None,
        other: str | None = "",
        product: str | None = None,
        review: str | None = None,
        min_offset: float | None = None,
    ) -> None:
        """Select from code what a person would click (the notebook's headless run): the split,
        the order, a run / second run by folder name (``other=None``: none; ``""``: keep), a
        product and a review by id (missing ones fall back to the first)."""
        self._quiet += 1
        try:
            if split is not None:
                self.split.value = split
            if sort is not None:
                self.sort.value = sort
            if min_offset is not None:
                self.min_offset.value = float(min_offset)
            if other is None:
                self.other.value = None
        finally:
            self._quiet -= 1
        self._want.update(run=run, other=other or None, product=product, review=review)
        self._act(self._fill_runs)

    # ---------------------------------------------------------------- static snapshot
    def snapshot_html(self) -> str:
        """What the view shows now, as one static HTML block (kept by papermill and by nbconvert)."""
        if self.dataset.value is None:
            return "<h3>pseudo-label explorer</h3>" + self.message.value
        head = (
            f"<h3>{escape(str(self.dataset.value))}/{escape(str(self.category.value))} "
            f"{escape(str(self.split.value))} · run {escape(self.run.value.label if self.run.value else '-')}"
            + (f" beside {escape(self.other.value.label)}" if self.other.value is not None else "")
            + "</h3>"
        )
        return "".join(
            [
                head,
                self.message.value,
                self.product.value,
                self.summary.value,
                self.table.value,
                self.detail.value,
                self.trajectory.value,
            ]
        )


# ---------------------------------------------------------------------------------------------
# `mmss explore`: the web app
# ---------------------------------------------------------------------------------------------

DEFAULT_PORT = 8866


def app_notebook(runs_root, data_root=None) -> dict:
    """The one-cell notebook Voila serves: an :class:`ExplorerApp` over ``runs_root``."""
    args = repr(str(runs_root)) + ("" if data_root is None else f", {str(data_root)!r}")
    src = f"from mmss_lib.explore.app import ExplorerApp\n\nExplorerApp({args}).show()\n"
    return {
        "cells": [
            {
                "cell_type": "code",
                "execution_count": None,
                "id": "explorer",
                "metadata": {},
                "outputs": [],
                "source": src,
            }
        ],
        "metadata": {
            "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
            "language_info": {"name": "python"},
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }


def serve_command(notebook, port: int, *, token: bool = True) -> list[str]:
    """The Voila command line: this Python, 127.0.0.1 only, exactly ``port`` (no retries), the
    ``Host`` header checked (127.0.0.1, ::1 or localhost only: a page served under another name,
    as DNS rebinding does, is refused with 403), and with ``token`` the token of the environment
    variable ``JUPYTER_TOKEN`` required (given in the URL once; not on the command line, which
    every local user can read)."""
    import sys

    return [
        sys.executable,
        "-m",
        "voila",
        str(notebook),
        f"--port={int(port)}",
        "--no-browser",
        "--Voila.ip=127.0.0.1",
        "--Voila.port_retries=0",
        "--theme=light",
        "--Voila.tornado_settings=" + repr({"allow_remote_access": False, "local_hostnames": ["localhost"]}),
        *(["--Voila.auto_token=True"] if token else []),
    ]


def serve_env(token: str | None) -> dict:
    """Voila's environment: the token (``JUPYTER_TOKEN``; none: no token asked), and traitlets'
    deprecation note about the dict option of :func:`serve_command` silenced."""
    import os

    env = {k: v for k, v in os.environ.items() if k != "JUPYTER_TOKEN"}
    if token:
        env["JUPYTER_TOKEN"] = token
    env["PYTHONWARNINGS"] = ",".join(
        w for w in (env.get("PYTHONWARNINGS"), "ignore:--tornado_settings:DeprecationWarning") if w
    )
    return env


def _stop_server(proc) -> None:
    """Stop the supervisor of Voila (:mod:`mmss_lib.explore.serve`) and whatever it started (Voila,
    its kernels), as Ctrl-C does; see :func:`mmss_lib.explore.serve.stop_server`."""
    from mmss_lib.explore.serve import stop_server

    stop_server(proc, timeout=25)


def _interrupt(signum, frame):
    """SIGTERM handler of ``mmss explore``: stop the way Ctrl-C does (KeyboardInterrupt)."""
    raise KeyboardInterrupt(signum)


def cli_main(argv: list[str], prog: str = "mmss explore") -> int:
    """``mmss explore [--runs DIR] [--data DIR] [--port N] [--no-token]``: serve the explorer with
    Voila on 127.0.0.1 and print the address (with its token, as Jupyter does, unless
    ``--no-token``); Ctrl-C or SIGTERM stops it (Voila, its kernels and the temporary notebook
    folder go with it), and so does a ``kill -9`` of ``mmss explore``: Voila runs under a supervisor
    that dies with its parent (:mod:`mmss_lib.explore.serve`)."""
    import argparse
    import json
    import shutil
    import signal
    import socket
    import subprocess
    import tempfile
    import threading
    from pathlib import Path

    from mmss_lib.errors import DataError

    ap = argparse.ArgumentParser(
        prog=prog,
        description="Serve the pseudo-label explorer (notebook 05's view) as a "
        "local web app (Voila) on 127.0.0.1. Read-only: nothing is written to the runs.",
    )
    ap.add_argument("--runs", default="outputs/runs", help="runs folder (default: outputs/runs, `make demo`'s)")
    ap.add_argument("--data", default=None, help="MRHP data folder (default: the 'data' folder beside --runs)")
    ap.add_argument(
        "--port",
        type=int,
        default=DEFAULT_PORT,
        help=f"port on 127.0.0.1 (default {DEFAULT_PORT}; 0: a free one, printed)",
    )
    ap.add_argument(
        "--no-token",
        action="store_true",
        help="serve without a token (any local user can then open the page; the Host header is still checked)",
    )
    args = ap.parse_args(argv)
    if not 0 <= args.port <= 65535:
        raise DataError(f"--port {args.port}: expected a port from 0 to 65535 (0: a free one)")
    try:
        import ipywidgets  # noqa: F401
        import voila  # noqa: F401
    except ImportError as exc:
        raise DataError(
            f"mmss explore needs voila and ipywidgets ({exc.name} is missing): pip install -e '.[notebooks]'"
        ) from None
    runs = Path(args.runs).resolve()
    data = Path(args.data).resolve() if args.data else None
    if not runs.is_dir():
        print(f"note: {runs} does not exist yet; the page will say so (train runs first, e.g. `make demo`)")
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", args.port))
        except OSError:
            raise DataError(f"port {args.port} on 127.0.0.1 is in use; choose another with --port") from None
        port = s.getsockname()[1]  # --port 0: the free port the system picked, handed to Voila
    main_thread = threading.current_thread() is threading.main_thread()
    if main_thread:  # SIGTERM stops as Ctrl-C does
        previous = signal.getsignal(signal.SIGINT), signal.signal(signal.SIGTERM, _interrupt)
    tmp, proc = None, None
    try:
        tmp = Path(tempfile.mkdtemp(prefix="mmss-explore-"))  # the served notebook; never in the runs folder
        nb = tmp / "mmss_explore.ipynb"
        nb.write_text(json.dumps(app_notebook(runs, data), indent=1), encoding="utf-8")
        import os
        import secrets

        from mmss_lib.explore.serve import set_parent_death_signal, supervisor_command

        token = None if args.no_token else secrets.token_hex(24)
        query = f"?token={token}" if token else ""
        print(f"mmss explore: serving {runs} at http://127.0.0.1:{port}/{query}  (Ctrl-C stops)", flush=True)
        proc = subprocess.Popen(
            supervisor_command(os.getpid(), tmp, serve_command(nb, port, token=bool(token))),
            env=serve_env(token),
            preexec_fn=set_parent_death_signal,
        )
        return proc.wait()
    except KeyboardInterrupt as exc:
        if main_thread:  # a second Ctrl-C / SIGTERM must not cut the clean-up short
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        if proc is not None:
            _stop_server(proc)
        return 128 + signal.SIGTERM if exc.args == (signal.SIGTERM,) else 130
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        if main_thread:
            for sig, handler in zip((signal.SIGINT, signal.SIGTERM), previous, strict=True):
                signal.signal(sig, signal.SIG_DFL if handler is None else handler)
