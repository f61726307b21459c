"""The README and docs/ as a newcomer meets them: the README's code block runs against the real
API, the README stays a front door (short, no dated measurements, every command listed), every
docs/ page a page names exists, ARCHITECTURE names every layer, and nothing cites a file outside
the repository."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
DOCS = REPO / "docs"


def _text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def python_blocks(markdown: str) -> list[str]:
    """The bodies of the ```python fenced blocks, in order."""
    return re.findall(r"^```python\n(.*?)^```\s*$", markdown, flags=re.M | re.S)


def test_python_blocks_are_found():
    md = "intro\n```python\nx = 1\n```\n\n```bash\nls\n```\n```python\ny = 2\n```\n"
    assert python_blocks(md) == ["x = 1\n", "y = 2\n"]


def test_readme_code_runs_and_prints_a_ranking_and_its_metrics():
    torch = pytest.importorskip("torch")
    blocks = python_blocks(_text(README))
    assert len(blocks) == 1, f"README.md: expected one python block, found {len(blocks)}"
    code = blocks[0]
    assert len(code.splitlines()) <= 45, "README.md: the library example should stay short"
    out = io.StringIO()
    with torch.random.fork_rng(), contextlib.redirect_stdout(out):  # the block seeds torch: keep it local
        namespace: dict = {"__name__": "readme"}
        exec(compile(code, str(README), "exec"), namespace)
    printed = out.getvalue()
    for part in ("human:", "pseudo (ptrt):", "most helpful first:", "'MAP'", "'NDCG@3'", "'NDCG@5'"):
        assert part in printed, (part, printed)
    # the objects the prose promises: MM-SS, a trained SSP-Label past its first estimate, metrics in [0, 1]
    from mmss_lib.models.mmss import MMSS
    from mmss_lib.ssp.label import SSPLabel

    assert isinstance(namespace["model"], MMSS)
    ssp = namespace["ssp"]
    assert isinstance(ssp, SSPLabel) and ssp.epoch == 3 and ssp.labels_estimated
    scores = namespace["scores"]
    assert scores.shape == (8,) and bool(torch.isfinite(scores).all())
    from mmss_lib.metrics.ranking import ranking_metrics

    metrics = ranking_metrics(namespace["batch"].product, namespace["batch"].label, scores, threshold=1)
    assert set(metrics) == {"MAP", "NDCG@3", "NDCG@5", "MRR"}
    assert all(0.0 <= v <= 1.0 for v in metrics.values()), metrics


def test_readme_is_a_front_door():
    text = _text(README)
    n = len(text.splitlines())
    assert n <= 200, f"README.md has {n} lines; at most 200 (the rest belongs in docs/)"
    dated = re.findall(r"\b20\d\d-\d\d-\d\d\b", text)
    assert not dated, f"README.md holds dated measurements {dated}: they belong in docs/EVIDENCE.md"


def test_readme_lists_every_command():
    from mmss_lib.cli import COMMANDS

    text = _text(README)
    missing = [c for c in COMMANDS if f"| `{c}` |" not in text]
    assert not missing, f"README.md's command table lacks {missing}"


@pytest.mark.parametrize(
    "path",
    [README, REPO / "outputs" / "README.md", *sorted(DOCS.glob("*.md"))],
    ids=lambda p: str(p.relative_to(REPO)),
)
def test_named_docs_pages_exist(path):
    named = set(re.findall(r"\bdocs/[A-Za-z_]+\.md\b", _text(path)))
    missing = sorted(p for p in named if not (REPO / p).is_file())
    assert not missing, f"{path.relative_to(REPO)} names {missing}, which do not exist"


def test_architecture_names_every_layer_within_its_budget():
    text = _text(DOCS / "ARCHITECTURE.md")
    n = len(text.splitlines())
    assert n <= 130, f"docs/ARCHITECTURE.md has {n} lines; about 120 at most"
    lib = REPO / "mmss_lib"
    packages = sorted(p.name for p in lib.iterdir() if (p / "__init__.py").is_file())
    modules = sorted(p.stem for p in lib.glob("*.py") if not p.stem.startswith("_"))
    missing = [f"{p}/" for p in packages if f"`{p}/`" not in text and f"`{p}/" not in text]
    missing += [m for m in modules if f"`{m}`" not in text]
    assert not missing, f"docs/ARCHITECTURE.md does not name {missing}"


def test_nothing_cites_the_facts_file_outside_the_repository():
    # the MRHP facts the code relies on are restated in docs/MRHP.md; the repository must not
    # point at a file it does not hold
    needle = "MRHP_" + "FACTS"
    roots = [REPO / "mmss_lib", REPO / "studies", REPO / "tests", REPO / "docs", REPO / "notebooks"]
    files = [README, REPO / "outputs" / "README.md"]
    files += [p for r in roots if r.is_dir() for p in r.rglob("*") if p.suffix in (".py", ".md", ".ipynb", ".yaml")]
    hits = [str(p.relative_to(REPO)) for p in files if p.is_file() and needle in _text(p)]
    assert not hits, f"{hits} cite {needle}.md; cite the section of docs/MRHP.md instead"
