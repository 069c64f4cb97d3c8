"""Run the gRPC core and the REST bridge side by side (the same as `minerva serve`)."""

from __future__ import annotations

import sys

from core.cli.__main__ import main

if __name__ == "__main__":
    sys.exit(main(["serve", *sys.argv[1:]]))
