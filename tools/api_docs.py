"""Build the API reference of the public library (``selfvae.__all__`` and the modules behind it) from the docstrings.

    python tools/api_docs.py                 # docs/api/ (HTML, one page a module; open docs/api/index.html)
    python tools/api_docs.py --out DIR

pdoc renders what ``selfvae.api`` and the package's ``__init__`` document (their ``__all__``), the config dataclasses
and the presets. Any warning pdoc raises (a broken cross-reference, a docstring it cannot parse, a module that fails
to import) fails the build: ``tests/test_api.py`` runs it, so the reference cannot rot.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

MODULES = ["selfvae", "selfvae.api", "selfvae.config", "selfvae.presets", "selfvae.evaluation.bounds",
           "selfvae.models.ops"]


def build(out: Path) -> list[str]:
    """Write the reference to ``out``; returns the warnings pdoc gave (empty: a clean build)."""
    import pdoc
    import pdoc.render

    pdoc.render.configure(docformat="restructuredtext", show_source=False,
                          footer_text="selfvae: self-supervised variational auto-encoders")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pdoc.pdoc(*MODULES, output_directory=out)
    return [f"{w.category.__name__}: {w.message}" for w in caught
            if "pdoc" in (w.filename or "") or "pdoc" in str(w.message)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "docs" / "api")
    args = p.parse_args()
    problems = build(args.out)
    for line in problems:
        print(line, file=sys.stderr)
    if problems:
        raise SystemExit(f"{len(problems)} warning(s): the reference is not clean")
    print(f"wrote {args.out / 'index.html'}")


if __name__ == "__main__":
    main()
