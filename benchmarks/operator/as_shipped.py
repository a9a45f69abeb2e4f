"""``modelport operator`` as the image runs it: without the ``kubernetes`` client.

The image installs the project's run-time dependencies only, and the ``kubernetes``
client is not one of them (the tests use it: a dev dependency). The project's virtual
environment, which the benchmark runs, has it; and Kopf imports it whenever it is
installed (for optional type hints), which costs ~47 MiB of resident memory. So the
benchmark's operator process makes ``import kubernetes`` fail, as it does in the
image, and is otherwise the same command.

    python -m benchmarks.operator.as_shipped operator [flags...]
"""

from __future__ import annotations

import sys


def without_kubernetes_client() -> None:
    """Make ``import kubernetes`` (and its submodules) raise ImportError."""
    sys.modules["kubernetes"] = None  # type: ignore[assignment]


def main() -> int:
    """Run ``modelport`` with its arguments, the client made unimportable first."""
    without_kubernetes_client()
    from modelport.cli import main as modelport_main

    return modelport_main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
