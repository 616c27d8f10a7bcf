"""``python -m nlft`` and the ``nlft`` command. The command's modules are imported inside a guard: a Ctrl-C while
they load (torch takes seconds) ends with ``nlft: interrupted``, not a traceback."""

import sys


def run() -> None:
    try:
        from .cli import main
    except KeyboardInterrupt:
        sys.stderr.write("nlft: interrupted\n")
        sys.exit(130)
    main()


if __name__ == "__main__":
    run()
