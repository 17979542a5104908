"""One way every command-line entry point ends on bad input: ``error: <one line>`` on stderr, exit 2.

``run_recbole_mm.py``, ``run_hyper.py`` and every ``python -m`` CLI (``recbole_mm.pretrain``,
``recbole_mm.feature_quality``, ``recbole_mm.encoders``, ``dataset_converters.*``) run their
``main`` through :func:`run_main`. Errors about the user's input -- a bad config value, a malformed
or missing file, an output that exists -- are reported in one line; anything else is a bug and
keeps its traceback. ``RECBOLE_MM_TRACEBACK=1`` shows the traceback of input errors too.
"""

from __future__ import annotations

import os
import sys

# What the project raises for bad input: ValueError and its subclasses (ConfigError, FeatureError,
# ConversionError, EncoderInputError), KeyError (RecBole's config: a missing model/dataset), and
# the OSErrors that name a path the user gave (missing input, existing or unwritable output).
USER_ERRORS = (ValueError, KeyError, FileExistsError, FileNotFoundError, NotADirectoryError, IsADirectoryError,
               PermissionError)


def error_line(exc: BaseException) -> str:
    """``exc`` as one line (a KeyError's message without its repr quotes, newlines folded)."""
    text = exc.args[0] if isinstance(exc, KeyError) and len(exc.args) == 1 else str(exc)
    text = " ".join(str(text).split()) or type(exc).__name__
    return f"error: {text}"


def run_main(main, argv=None) -> int:
    """Run ``main(argv)``; return its int result, else 0; on a user error print one line, return 2."""
    try:
        result = main(argv)
    except USER_ERRORS as exc:
        if os.environ.get("RECBOLE_MM_TRACEBACK"):
            raise
        sys.stdout.flush()  # the error comes after anything already printed
        print(error_line(exc), file=sys.stderr, flush=True)
        return 2
    return result if isinstance(result, int) and not isinstance(result, bool) else 0
