"""The appliance firmware image: build (mmdebstrap + disk image), personalise, flash.

Runs on the operator's machine, not on the board: `cjb image build|personalise|flash`.
The recipe is image-build/recipe.toml; the files it installs are under image-build/overlay/.
"""

from __future__ import annotations


class ImageError(Exception):
    """What is wrong with a build, an image or a flash target, and how to fix it."""
