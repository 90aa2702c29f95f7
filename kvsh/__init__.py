"""kvsh: the kv shell, and the Python client it is built on (`kvsh.client`)."""
