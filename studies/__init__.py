"""This project's own studies, built on `mmss_lib` and not part of it."""
