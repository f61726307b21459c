"""Reading finished runs: the statistics chain (`summary`), tables, plots, cue sensitivity, the
case study and the pseudo labels' health (`ssp_analysis`)."""
