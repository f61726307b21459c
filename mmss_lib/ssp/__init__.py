"""SSP-Label: the pseudo labels of the subtasks (Eq. 10-12, 17-21, `label`) and their records on disk
(`records`)."""
