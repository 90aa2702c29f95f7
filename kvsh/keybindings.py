"""The shell's own keys on top of prompt_toolkit's Emacs set (Ctrl-R, Ctrl-C, Ctrl-D, arrows).

- Tab completes at once, even while a completion is still running in the background.
- A paste holding a newline is accepted whole; the REPL runs it line by line.
"""

from __future__ import annotations

from prompt_toolkit.completion import CompleteEvent
from prompt_toolkit.completion.base import get_common_complete_suffix
from prompt_toolkit.key_binding import KeyBindings
from prompt_toolkit.keys import Keys


def key_bindings() -> KeyBindings:
    kb = KeyBindings()

    @kb.add(Keys.BracketedPaste)
    def _paste(event) -> None:
        """A paste of several lines runs them line by line, at once (the REPL splits them)."""
        data = event.data.replace("\r\n", "\n").replace("\r", "\n")
        buffer = event.current_buffer
        buffer.insert_text(data)
        if "\n" in data:
            buffer.validate_and_handle()

    @kb.add("tab")
    def _tab(event) -> None:
        """Tab completes at once: one candidate is inserted, several insert their common
        part or cycle. Asked synchronously when no menu is up yet: a completion still
        running in the background must not swallow the key."""
        buffer = event.current_buffer
        state = buffer.complete_state
        if state is not None and state.current_completion is not None:
            buffer.complete_next()
            return
        if state is not None and state.completions:
            completions = list(state.completions)
        else:  # none yet, or the background completion has not delivered any
            completions = list(buffer.completer.get_completions(
                buffer.document, CompleteEvent(completion_requested=True)))
        if len(completions) == 1:
            buffer.apply_completion(completions[0])
        elif common := get_common_complete_suffix(buffer.document, completions):
            buffer.insert_text(common)
        elif state is not None and state.completions:
            buffer.complete_next()
        elif completions:
            buffer.cancel_completion()
            buffer.start_completion(select_first=False)

    return kb
