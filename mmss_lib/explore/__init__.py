"""The pseudo-label explorer: its data side (`explorer`) and its widgets and web app (`app`)."""
