"""
The `localize` console entry point.

Answers --help without touching DDS, and a Ctrl-C at any moment (even while the model loads) ends
it quietly.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv if argv is None else argv
    ros_args = argv[argv.index("--ros-args"):] if "--ros-args" in argv else []
    own = argv[1:len(argv) - len(ros_args)]
    try:
        if any(a in ("-h", "--help") for a in own):
            from vpr_ros.parameters import render_help

            sys.stdout.write(render_help())
            raise SystemExit(0)
        from vpr_ros.ros.node import run

        raise SystemExit(run(argv))
    except KeyboardInterrupt:
        raise SystemExit(130) from None


if __name__ == "__main__":
    main()
