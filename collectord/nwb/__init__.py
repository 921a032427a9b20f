"""``collectord export nwb``: an experiment folder as one NWB file.

Neuroscience data is shared as NWB (Neurodata Without Borders; DANDI takes
nothing else). pynwb is an optional dependency (``pip install
'collectord[nwb]'``): this package's own import needs nothing beyond
collectord, so that a missing extra is said in one clear line, and the
export itself (``build.py``) imports pynwb. Where each part of the experiment
goes in the file is in ``build.py``'s docstring, and which tree paths fill the
descriptive fields in ``fields.py``.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import ConfigError

#: What to run when pynwb is missing.
INSTALL = "pip install 'collectord[nwb]'"


def export(
    folder: str | os.PathLike[str],
    output: str | os.PathLike[str] | None = None,
    map_file: str | os.PathLike[str] | None = None,
) -> tuple[Path, list[str]]:
    """Write the experiment in ``folder`` (or of its metadata file) as an NWB file.

    Returns the file (default: ``<stem>.nwb`` beside the metadata) and notes on
    what it holds only in the metadata text (a stream whose file is missing, a
    stimulus log without times). ``map_file``: a JSON or TOML file of NWB field
    -> tree path(s), over ``fields.DEFAULT_MAP``.
    """
    try:
        import pynwb  # noqa: F401
    except ImportError:
        raise ConfigError(f"exporting to NWB needs pynwb: {INSTALL}") from None
    from . import build, fields

    exported = build.export(folder, output, fields.load_map(map_file))
    return exported.path, exported.notes
