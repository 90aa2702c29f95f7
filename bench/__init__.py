"""The benchmark suite: kv against its raw ceiling and Redis (run with `python -m bench`)."""
