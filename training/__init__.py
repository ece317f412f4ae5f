"""latentwire.training: train autoencoders with PyTorch and export them as model packages.

Needs the training extra (`pip install 'latentwire[train]'`). Importing this package does
not import torch; the modules that need it (models, trainer, export, demo) do.
"""

from __future__ import annotations

__all__: list[str] = []
