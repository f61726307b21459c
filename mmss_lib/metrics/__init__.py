"""Ranking metrics (MAP, NDCG@k, MRR), per-product values, bootstrap intervals and paired tests:
pure functions on arrays and frames, used by training, evaluation and the studies."""
