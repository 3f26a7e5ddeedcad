"""How long the search tokenizer takes on a few kinds of text (best of 5 x 2,000 calls).

Beside ``engine.tokenizer.tokenize`` it times the tokenizer of formats 5 and 6
(``[^\\W_]+``: Python's ``str.isalnum`` as "alphanumeric", kept here as the baseline it
replaced), on the same texts in the same run.

Run: ``.venv/bin/python bench/probes/tokenize_speed.py``.
"""

from __future__ import annotations

import os
import re
import sys
import timeit

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from engine.tokenizer import tokenize

_OLDER = re.compile(r"[^\W_]+")


def older(text: str) -> list[str]:
    """The tokenizer of formats 5 and 6 (tokens split at Other_Alphabetic marks)."""
    out = []
    for word in _OLDER.findall(text):
        if len(word.encode()) < 32:
            out.append(word.lower() if word.isascii() else "".join(c.lower() for c in word))
    return out


TEXTS = {
    "English, 1,440 chars": "The quick brown fox jumps over the lazy dog, again; 42 times! " * 24,
    "English with one emoji": "The quick brown fox jumps over the lazy dog, again; 42 times! " * 24
    + "\U0001f600",
    "English with a Brahmi sign": "The quick brown fox jumps over the lazy dog, again; 42 times! "
    * 24
    + "\U00011003\U00011038",
    "vowelled Arabic": "كِتَابٌ جَمِيلٌ في المكتبة " * 40,
    "Hindi": "हिन्दी भाषा बहुत सुंदर है " * 40,
    "English, 100k chars": "lorem ipsum dolor sit amet, consectetur adipiscing elit " * 1800,
}


def main() -> None:
    for name, text in TEXTS.items():
        times = []
        for fn in (tokenize, older):
            number = 2_000 if len(text) < 10_000 else 50
            best = min(timeit.repeat(lambda fn=fn: fn(text), number=number, repeat=5)) / number
            times.append(best * 1e6)
        print(f"{name:28s} tokenize {times[0]:8.1f} µs   older {times[1]:8.1f} µs")


if __name__ == "__main__":
    main()
