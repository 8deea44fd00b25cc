"""Shared command-line plumbing: user errors become one line on stderr and exit status 2."""

from __future__ import annotations

import sys
from collections.abc import Callable

from lvm_policy.errors import LvmPolicyError


def run_main(main: Callable[[], object]) -> None:
    """Run ``main``; an :class:`LvmPolicyError` or a bad value prints ``error: ...`` and exits with 2."""
    try:
        main()
    except LvmPolicyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        sys.exit(130)
