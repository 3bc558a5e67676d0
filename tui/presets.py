"""The presets the sidebar lists: every ``*.toml`` under the presets folder, recursively."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import tomllib


@dataclass
class PresetInfo:
    path: Path
    rel: str  # path relative to the presets folder, e.g. "paper/warmup_vgg16.toml"
    name: str
    description: str
    error: str | None = None  # set when the TOML cannot be read


def scan_presets(root: str | Path) -> list[PresetInfo]:
    root = Path(root)
    if not root.is_dir():
        return []
    out = []
    for p in sorted(root.rglob("*.toml")):
        rel = p.relative_to(root).as_posix()
        try:
            raw = tomllib.loads(p.read_text())
            name = str(raw.get("name") or p.stem)
            desc = str(raw.get("description") or "")
            out.append(PresetInfo(p, rel, name, desc.strip()))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
            out.append(PresetInfo(p, rel, p.stem, "", error=f"{type(e).__name__}: {e}"))
    # top-level presets first, then sub-folders
    out.sort(key=lambda i: (i.rel.count("/"), i.rel))
    return out
