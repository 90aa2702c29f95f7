"""What kvd and kvsh both import: the command table (commands), the message codec (codec),
the errors (errors), the Python client (client; users import it as kvsh.client) and the
cluster's CURVE keys and ZAP policy (keyring). Imports nothing of kv but shared itself."""
