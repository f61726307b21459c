"""The models: MM-SS (`mmss`), the masked building blocks every system shares (`masked`), the
losses, on-the-fly text encoding, the system registry and the eight comparison systems."""
