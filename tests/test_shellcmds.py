"""Shell commands stay on the shell's side: the server's table and handlers never see them."""

from __future__ import annotations

from kvd.state.handlers import HANDLERS
from kvsh.grammar import all_commands, find
from kvsh.shellcmds import SHELL_COMMANDS
from shared.commands import COMMANDS


def test_every_server_command_has_a_handler_and_no_shell_command_does():
    assert set(HANDLERS) == set(COMMANDS)
    assert not set(SHELL_COMMANDS) & set(COMMANDS)


def test_the_shell_knows_both_tables():
    assert {c.name for c in all_commands()} == set(COMMANDS) | set(SHELL_COMMANDS)
    assert find("connect") is SHELL_COMMANDS["CONNECT"]
    assert find("get") is COMMANDS["GET"]
