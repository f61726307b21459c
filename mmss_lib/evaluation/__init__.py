"""Reading finished runs: the statistics chain (`summary`), tables, plots, cue sensitivity, the
case study and the pseudo labels' health (`ssp_analysis`)."""

from __future__ import annotations

from mmss_lib.utils import lazy_exports

# public name -> the module of this package that defines it (imported on the name's first use)
_EXPORTS: dict[str, str] = {
    "per_run_per_product": "summary",
    "pooled_per_product": "summary",
    "product_summary": "summary",
    "table_summary": "summary",
    "paired_differences": "summary",
    "format_summary": "summary",
    "write_summaries": "summary",
    "read_summaries": "summary",
    "comparison_table": "tables",
    "ablation_table": "tables",
    "to_markdown": "tables",
    "plain_markdown": "tables",
    "save_table": "tables",
    "save_figure": "plots",
    "plot_pseudo_label_trajectories": "plots",
    "plot_offset_distributions": "plots",
    "plot_ablation_differences": "plots",
    "plot_learning_curves": "plots",
    "plot_case_study": "plots",
    "cue_sensitivity_table": "cue_sensitivity",
    "format_cue_sensitivity": "cue_sensitivity",
    "CaseStudy": "case_study",
    "score_with_checkpoint": "case_study",
    "ssp_health_table": "ssp_analysis",
    "cue_association": "ssp_analysis",
}
__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
