"""What kvd and kvsh both import: the command table, the message codec and the errors."""
