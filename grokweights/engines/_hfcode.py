"""The model code beside an ``hf`` export, so that ``from_pretrained(DIR, trust_remote_code=True)`` works offline.

``config.json``'s ``auto_map`` names the classes ``transformers`` loads with ``trust_remote_code``:

* ``hub`` (default): hpcai-tech/grok-1's code on the model hub (downloaded by ``transformers``: needs network);
* ``local``: grokweights' own ``configuration_grok1.py`` / ``modeling_grok1.py`` (``hf_code/``: upstream
  Grok-1's arithmetic, tanh GELU, no KV cache) copied beside the weights; ``auto_map`` names those files;
* a folder: the user's copy of hpcai-tech's ``configuration_grok1.py`` and ``modeling_grok1.py`` (e.g. from a
  ``huggingface-cli download hpcai-tech/grok-1 --include '*.py'`` on a machine with network), copied beside
  the weights; ``auto_map`` names those files.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import UsageError

__all__ = ["HF_CODE_FILES", "resolve_hf_code", "copy_hf_code", "auto_map"]

HF_CODE_FILES = ("configuration_grok1.py", "modeling_grok1.py")
_OURS = Path(__file__).parent / "hf_code"
_HUB = "hpcai-tech/grok-1--"


def resolve_hf_code(value: str | os.PathLike[str] | None, fmt: str) -> Path | None:
    """The folder whose code files go beside the export (None: the hub's code); refused up front when unusable."""
    if value is None or os.fspath(value) == "hub":
        return None
    if fmt != "hf":
        raise UsageError(f"--hf-code is for --format hf (the hpcai-tech model class); --format {fmt} needs no model "
                         "code", expected="hf", actual=fmt)
    folder = _OURS if os.fspath(value) == "local" else Path(value)
    missing = [name for name in HF_CODE_FILES if not (folder / name).is_file()]
    if missing:
        raise UsageError(f"{folder}: no {' or '.join(missing)} here; --hf-code takes hub, local or a folder holding "
                         f"{' and '.join(HF_CODE_FILES)}", path=folder, expected=list(HF_CODE_FILES), actual=missing)
    return folder


def copy_hf_code(folder: Path, dst: Path) -> list[Path]:
    """Copy the code files into the export folder ``dst``."""
    out = []
    for name in HF_CODE_FILES:
        (dst / name).write_bytes((folder / name).read_bytes())
        out.append(dst / name)
    return out


def auto_map(local: bool) -> dict[str, str]:
    """``auto_map`` of ``config.json``: the local code files, or hpcai-tech's on the hub."""
    prefix = "" if local else _HUB
    return {"AutoConfig": f"{prefix}configuration_grok1.Grok1Config",
            "AutoModelForCausalLM": f"{prefix}modeling_grok1.Grok1ModelForCausalLM"}
