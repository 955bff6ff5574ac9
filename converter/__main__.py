"""``python -m converter`` works like ``lstm-convert``."""

from converter.cli import main

main()
