"""kvsh: the kv shell. The Python client users import is `kvsh.client` (see its docstring)."""
