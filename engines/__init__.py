"""Per-target build profiles (``*.toml``) for ``mmg-export build --target NAME``.

Built artifacts go to ``engines/out/`` (git-ignored), never beside the profiles.
"""
from pathlib import Path

PROFILES_DIR = Path(__file__).resolve().parent
