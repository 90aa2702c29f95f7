"""Commands the shell answers itself, declared as data in the shape of the server's table.

They are never sent: the daemon's table (`shared.commands.COMMANDS`) and its handlers know
nothing of them. Keeping them as `Command`s lets completion, highlighting, the syntax hint,
validation and HELP treat them exactly like server commands.
"""

from __future__ import annotations

from shared.commands import Arg, Command, Kind

SHELL_COMMANDS: dict[str, Command] = {
    c.name: c
    for c in (
        Command("CONNECT", "Switch the shell to another node (host:port or member name)",
                (Arg("address", Kind.NODE),)),
        Command("CLEAR", "Clear the screen"),
        Command("EXIT", "Leave the shell (Ctrl-D does too)"),
        Command("QUIT", "Leave the shell (Ctrl-D does too)"),
    )
}
