"""emg2qwerty's 99-class keystroke charset and the CTC targets built from a keystroke log.

Classes: 0-25 a-z, 26-51 A-Z, 52-61 0-9, 62-93 the 32 ASCII punctuation marks (in `string.punctuation`
order), 94 backspace, 95 enter, 96 space, 97 shift, 98 the CTC blank. Backspace is an ordinary label, so
targets keep typos exactly as typed; keys outside the charset (arrows, ctrl, ...) are dropped.
"""

from __future__ import annotations

import string

import numpy as np

PRINTABLE = string.ascii_lowercase + string.ascii_uppercase + string.digits + string.punctuation
BACKSPACE, ENTER, SPACE, SHIFT, BLANK = 94, 95, 96, 97, 98
N_CLASSES = 99

_SPECIAL_KEYS = {
    "Key.backspace": BACKSPACE,
    "Key.enter": ENTER,
    "Key.space": SPACE,
    "Key.shift": SHIFT,
    "Key.shift_l": SHIFT,
    "Key.shift_r": SHIFT,
}
# what emg2qwerty's logs and prompts also contain: typographic marks typed as their ASCII key
_NORMALISE = {"’": "'", "‘": "'", "“": '"', "”": '"', "—": "-", "–": "-", "\r": "\n", "\x7f": "\b"}
_CHAR_LABEL = {c: i for i, c in enumerate(PRINTABLE)}
_CHAR_LABEL.update({"\b": BACKSPACE, "\n": ENTER, " ": SPACE, "⌫": BACKSPACE, "⏎": ENTER, "⇧": SHIFT})
# how labels print: visible symbols for the keys that have no glyph
_LABEL_TEXT = list(PRINTABLE) + ["⌫", "⏎", " ", "⇧", "∅"]


def key_to_label(key: str) -> int | None:
    """A pynput key name (`"a"`, `"Key.backspace"`, ...) or a character -> its class, None if dropped."""
    if key in _SPECIAL_KEYS:
        return _SPECIAL_KEYS[key]
    key = _NORMALISE.get(key, key)
    return _CHAR_LABEL.get(key)


def text_to_labels(text: str) -> list[int]:
    """Characters -> classes (`"\\n\\r\\b\\x7f"` -> `[95, 95, 94, 94]`); others dropped.

    labels_to_text's symbols (⌫ ⏎ ⇧) read back as their keys, so the two round-trip."""
    return [label for label in map(key_to_label, text) if label is not None]


def labels_to_text(labels) -> str:
    """Classes -> a printable string (backspace ⌫, enter ⏎, shift ⇧)."""
    return "".join(_LABEL_TEXT[int(label)] for label in labels)


def keystroke_labels(keys: list[str], times: np.ndarray, start: float, stop: float) -> np.ndarray:
    """Labels of the keys pressed in `[start, stop)` (seconds), in order; unknown keys dropped."""
    labels = [
        label
        for key, time in zip(keys, times)
        if start <= time < stop and (label := key_to_label(key)) is not None
    ]
    return np.asarray(labels, dtype=np.int64)
